"""The `chatledger` command line, in process (CliRunner) over SQLite files, plus the installed script."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from typer.testing import CliRunner

from chatledger.cli import app
from chatledger.service import ChatLedger
from chatledger.settings import Settings

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "cli.db"
    monkeypatch.setenv("CHATLEDGER_DATABASE_URL", f"sqlite+aiosqlite:///{db}")
    monkeypatch.setenv("CHATLEDGER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CHATLEDGER_JWT_SECRET", raising=False)
    return db


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


async def _seed(url: str) -> tuple[str, str]:
    async with ChatLedger.open(url) as ledger:
        conv = await ledger.start_conversation(user_id="alice", title="first")
        await ledger.add_messages(
            conv.id,
            user_id="alice",
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        )
        await ledger.update_conversation(conv.id, user_id="alice", title="renamed")
        other = await ledger.start_conversation(user_id="bob")
        return conv.id, other.id


def seed(db: Path) -> tuple[str, str]:
    return asyncio.run(_seed(f"sqlite+aiosqlite:///{db}"))


def test_migrate_creates_the_secret_and_token_uses_it(env: Path) -> None:
    result = invoke("migrate")
    assert result.exit_code == 0, result.output
    secret_file = env.parent / "data" / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    token = invoke("token", "alice", "--admin", "--ttl", "120")
    assert token.exit_code == 0
    claims = jwt.decode(token.stdout.strip(), secret_file.read_text(), algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["scope"] == "chatledger:admin"
    assert claims["exp"] - claims["iat"] == 120


def test_migrate_down_and_up(env: Path) -> None:
    assert invoke("migrate").stderr.strip() == "at revision 0002"
    # an upgrade cannot go back: saying it did would be a lie
    refused = invoke("migrate", "--revision", "0001")
    assert refused.exit_code == 1 and "--downgrade" in refused.stderr
    down = invoke("migrate", "--revision", "base", "--downgrade")
    assert down.exit_code == 0 and down.stderr.strip() == "at revision base"
    with sqlite3.connect(env) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchall() == []
    assert invoke("migrate").stderr.strip() == "at revision 0002"


def test_replay_at_version(env: Path) -> None:
    cid, _ = seed(env)
    now = invoke("replay", cid)
    assert now.exit_code == 0, now.output
    body = json.loads(now.stdout)
    assert body["conversation"]["title"] == "renamed" and body["conversation"]["version"] == 4
    assert [m["content"] for m in body["messages"]] == ["hi", "yo"]
    then = json.loads(invoke("replay", cid, "--at-version", "2").stdout)
    assert then["conversation"]["title"] == "first" and [m["content"] for m in then["messages"]] == ["hi"]
    assert invoke("replay", cid, "--user", "alice").exit_code == 0
    wrong = invoke("replay", cid, "--user", "bob")
    assert wrong.exit_code == 1 and "not found" in wrong.stderr
    assert invoke("replay", cid, "--at-version", "9").exit_code == 1
    assert invoke("replay", "nope").exit_code == 1


def test_stats(env: Path) -> None:
    seed(env)
    result = invoke("stats", "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["streams"] == 2 and counts["events"] == 5 and counts["users"] == 2
    assert counts["head_position"] >= 5
    assert "events" in invoke("stats").stdout


def test_verify_then_tamper(env: Path) -> None:
    cid, _ = seed(env)
    ok = invoke("verify")
    assert ok.exit_code == 0 and json.loads(ok.stdout) == {"ok": True, "events_checked": 5}
    one = invoke("verify", "--conversation", cid)
    assert json.loads(one.stdout)["events_checked"] == 4
    with sqlite3.connect(env) as conn:
        conn.execute(
            "UPDATE events SET data = json_set(data, '$.content', 'forged') "
            "WHERE stream_id = ? AND stream_version = 2",
            (cid,),
        )
    broken = invoke("verify", "--conversation", cid)
    assert broken.exit_code == 1
    facts = json.loads(broken.stdout)
    assert facts["ok"] is False and facts["first_broken"]["version"] == 2
    assert facts["first_broken"]["stream_id"] == cid
    assert "broken" in broken.stderr and broken.stderr.count("\n") == 1  # one line, no bar residue
    whole = invoke("verify")
    assert whole.exit_code == 1 and whole.stderr.startswith("error:") and whole.stderr.count("\n") == 1


def test_export_then_import_into_a_fresh_store(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid, _ = seed(env)
    out = tmp_path / "log.jsonl"
    assert invoke("export", "-o", str(out)).exit_code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 5 and {"event_id", "stream_id", "stream_version", "type", "data", "hash"} <= set(
        lines[0]
    )
    only_alice = invoke("export", "--user", "alice")
    assert len(only_alice.stdout.splitlines()) == 4
    assert len(invoke("export", "--conversation", cid).stdout.splitlines()) == 4

    assert invoke("import", str(out)).exit_code == 1  # the store is not empty
    source_replay = json.loads(invoke("replay", cid).stdout)

    fresh = tmp_path / "fresh.db"
    monkeypatch.setenv("CHATLEDGER_DATABASE_URL", f"sqlite+aiosqlite:///{fresh}")
    result = invoke("import", str(out))
    assert result.exit_code == 0, result.output
    replayed = json.loads(invoke("replay", cid).stdout)
    assert replayed == source_replay  # times included: the import keeps each event's recorded_at
    assert replayed["conversation"]["title"] == "renamed"
    assert [m["content"] for m in replayed["messages"]] == ["hi", "yo"]
    assert json.loads(invoke("stats", "--json").stdout)["events"] == 5
    assert invoke("verify").exit_code == 0
    # Positions are 1..n on SQLite, so the re-computed chain is the original one, hash for hash.
    reexported = [json.loads(line) for line in invoke("export").stdout.splitlines()]
    assert [e["hash"] for e in reexported] == [e["hash"] for e in lines]


def test_import_rejects_garbage(env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = invoke("import", str(bad))
    assert result.exit_code == 1 and "bad.jsonl:1" in result.stderr


def test_usage_errors_exit_2(env: Path) -> None:
    assert invoke("nope").exit_code == 2
    assert invoke("replay").exit_code == 2
    assert invoke("token", "alice", "--ttl", "zero").exit_code == 2


def test_installed_entry_point(env: Path) -> None:
    script = Path(sys.executable).parent / "chatledger"
    result = subprocess.run([str(script), "token", "carol"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert jwt.decode(result.stdout.strip(), options={"verify_signature": False})["sub"] == "carol"
    failed = subprocess.run([str(script), "replay", "nope"], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("error:")


def test_settings_from_env(env: Path) -> None:
    assert Settings().database_url.endswith("cli.db")


def test_rebuild_repairs_a_damaged_read_model(env: Path) -> None:
    cid, _ = seed(env)
    with sqlite3.connect(env) as db:
        db.execute("UPDATE messages SET content = 'forged' WHERE conversation_id = ?", (cid,))
    dry = invoke("rebuild", "--dry-run")
    assert dry.exit_code == 1
    report = json.loads(dry.stdout)
    assert report["swapped"] is False and report["differences_total"] == 2
    assert {d["table"] for d in report["differences"]} == {"messages"}

    fixed = invoke("rebuild")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["swapped"] is True
    assert invoke("rebuild", "--dry-run").exit_code == 0  # the live tables equal a fresh fold again
    assert invoke("rebuild", "projections-that-do-not-exist").exit_code == 2
