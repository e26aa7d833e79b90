"""`chatledger`: the operator's command line (direct database access, no --user needed).

Exit codes: 0 ok, 1 error (one line on stderr), 2 usage.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from chatledger import auth
from chatledger import migrate as migrations
from chatledger.eventstore import NewEvent, RecordedEvent
from chatledger.service import ChatLedger, event_view
from chatledger.settings import Settings

app = typer.Typer(
    name="chatledger",
    help="Event-sourced chat history: serve the API, migrate, mint tokens, audit and move the log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
T = TypeVar("T")


class CommandError(Exception):
    """A failure reported as one line on stderr with exit code 1."""


def _settings() -> Settings:
    return Settings()


def _run(coro: Awaitable[T]) -> T:
    async def wrapped() -> T:
        return await coro

    return asyncio.run(wrapped())


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        # Not on a terminal (a log, a pipe) a bar is noise, and rich would leave a blank line behind
        # it: errors stay one line on stderr.
        disable=not err.is_terminal,
    )


# --- serve, migrate, token ----------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env CHATLEDGER_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env CHATLEDGER_PORT].")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the HTTP API with uvicorn."""
    import uvicorn

    with _errors():
        settings = _settings()
        auth.ensure_secret(settings)
        uvicorn.run(
            "chatledger.api.app:create_app",
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers,
            access_log=False,
            log_level=settings.log_level.lower(),
        )


@app.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target Alembic revision.")] = "head",
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="Migrate down to --revision (e.g. base); all are reversible.")
    ] = False,
) -> None:
    """Apply the database migrations (and create the local JWT secret if none is configured)."""
    with _errors():
        settings = _settings()
        auth.ensure_secret(settings)
        move = migrations.downgrade if downgrade else migrations.upgrade
        with err.status(f"migrating to {revision}"):
            _run(move(settings.database_url, revision))
        now = _run(migrations.current_revision(settings.database_url))
        if not downgrade and revision not in ("head", now):
            raise CommandError(f"the database is at {now}, past {revision}: use --downgrade to go back")
        err.print(f"at revision {now or 'base'}", highlight=False)


@app.command()
def token(
    user: Annotated[str, typer.Argument(help="The user id (the token's sub).")],
    admin: Annotated[bool, typer.Option("--admin", help="Grant the chatledger:admin scope.")] = False,
    ttl: Annotated[int, typer.Option(min=1, help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a bearer token (HS256, for the configured or generated secret)."""
    with _errors():
        typer.echo(auth.mint_token(_settings(), user, admin=admin, ttl_seconds=ttl))


# --- reading ------------------------------------------------------------------------------------------


async def _replay(ledger: ChatLedger, cid: str, at_version: int | None, user: str | None) -> dict[str, Any]:
    info = await ledger.store.stream_info(_uuid(cid))
    if info is None or (user is not None and info.partition != user):
        raise CommandError(f"conversation {cid} not found")
    at = at_version if at_version is not None else info.version
    owner = info.partition
    view = await ledger.get_conversation(cid, user_id=owner, at_version=at, admin=True)
    messages: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await ledger.get_messages(
            cid, user_id=owner, at_version=at, admin=True, limit=100, after=after, order="asc"
        )
        messages += [m.model_dump(mode="json") for m in page.data]
        if not page.has_more or not page.data:
            break
        after = page.data[-1].seq
    return {"conversation": view.model_dump(mode="json"), "messages": messages}


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CommandError(f"conversation {value} not found") from None


@app.command()
def replay(
    conversation_id: Annotated[str, typer.Argument(metavar="ID")],
    at_version: Annotated[int | None, typer.Option(min=1, help="Replay as it stood after event N.")] = None,
    user: Annotated[str | None, typer.Option(help="Require the conversation to belong to this user.")] = None,
) -> None:
    """Print a conversation (and its messages) as it stood at a version, folded from the log."""
    with _errors():
        _echo_json(_with_ledger(lambda ledger: _replay(ledger, conversation_id, at_version, user)))


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts of streams, events, users, conversations and messages; the log head."""
    with _errors():
        counts = _with_ledger(lambda ledger: ledger.stats())
        if as_json:
            _echo_json(counts)
            return
        table = Table("what", "count")
        for key, value in counts.items():
            table.add_row(key, str(value))
        Console().print(table)


@app.command()
def verify(
    conversation: Annotated[str | None, typer.Option(help="Check one conversation only.")] = None,
) -> None:
    """Recompute the hash chains; exit 1 and name the first broken event on any break."""
    with _errors():
        result = _with_ledger(lambda ledger: _verify(ledger, conversation))
        _echo_json(result)
        if not result["ok"]:
            b = result["first_broken"]
            err.print(
                f"error: hash chain broken at stream {b['stream_id']} version {b['version']}: {b['reason']}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)


async def _verify(ledger: ChatLedger, conversation: str | None) -> dict[str, Any]:
    from chatledger.api.schemas import VerifyPublic

    if conversation is None:
        total = int((await ledger.stats())["events"])
    elif (info := await ledger.store.stream_info(_uuid(conversation))) is None:
        raise CommandError(f"conversation {conversation} not found")
    else:
        total = info.version
    with _progress_rate() as bar:
        task = bar.add_task("verifying", total=total)
        result = await ledger.verify(
            conversation, admin=True, progress=lambda checked: bar.update(task, completed=checked)
        )
    return VerifyPublic.of(result).model_dump(mode="json")


# --- moving the log -----------------------------------------------------------------------------------


def _envelope(e: RecordedEvent) -> dict[str, Any]:
    return {**event_view(e).model_dump(mode="json"), "partition": e.partition}


async def _export(ledger: ChatLedger, out: TextIO, user: str | None, conversation: str | None) -> int:
    wanted = _uuid(conversation) if conversation else None
    head = await ledger.store.head_position()
    written, position = 0, 0
    with _progress() as progress:
        task = progress.add_task("exporting", total=head)
        while batch := await ledger.store.read_all(after=position, limit=1000):
            for e in batch:
                if (user is None or e.partition == user) and (wanted is None or e.stream_id == wanted):
                    out.write(json.dumps(_envelope(e), ensure_ascii=False) + "\n")
                    written += 1
            position = batch[-1].global_position
            progress.update(task, completed=min(position, head))
    return written


@app.command()
def export(
    user: Annotated[str | None, typer.Option(help="Only this user's conversations.")] = None,
    conversation: Annotated[str | None, typer.Option(help="Only this conversation.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File (default: stdout).")] = None,
) -> None:
    """Write raw events as JSON Lines, in log order."""
    with _errors():
        if output is None:
            count = _with_ledger(lambda ledger: _export(ledger, sys.stdout, user, conversation))
        else:
            with output.open("w", encoding="utf-8") as f:
                count = _with_ledger(lambda ledger: _export(ledger, f, user, conversation))
        err.print(f"exported {count} events", highlight=False)


def _read_events(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise CommandError(f"{path}:{number}: not a JSON event: {exc}") from None
            rows.append(row)
    return rows


def _new_event(row: dict[str, Any]) -> NewEvent:
    return NewEvent(
        type=row["type"],
        data=row["data"],
        metadata=row.get("metadata") or {},
        event_id=uuid.UUID(row["event_id"]),
        schema_version=int(row.get("schema_version", 1)),
        recorded_at=datetime.fromisoformat(row["recorded_at"].replace("Z", "+00:00")),
    )


async def _import(ledger: ChatLedger, rows: list[dict[str, Any]]) -> int:
    if await ledger.store.head_position() > 0:
        raise CommandError("the store is not empty: import only into a fresh database")
    with _progress() as progress:
        task = progress.add_task("importing", total=len(rows))
        i = 0
        while i < len(rows):
            # Consecutive events of one stream go in one append (a keyed batch stays atomic).
            j = i + 1
            while j < len(rows) and rows[j]["stream_id"] == rows[i]["stream_id"]:
                j += 1
            first = rows[i]
            await ledger.store.append(
                first["stream_id"],
                [_new_event(r) for r in rows[i:j]],
                int(first.get("stream_version", first.get("version", 1))) - 1,  # "version" in older exports
                partition=first.get("partition") or first["data"].get("user_id"),
            )
            progress.update(task, completed=j)
            i = j
    return len(rows)


@app.command(name="import")
def import_(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]) -> None:
    """Load a JSON Lines export into an empty store (migrating it first)."""
    with _errors():
        rows = _read_events(file)
        try:
            count = _with_ledger(lambda ledger: _import(ledger, rows))
        except KeyError as exc:
            raise CommandError(f"{file}: an event lacks the field {exc}") from None
        err.print(f"imported {count} events", highlight=False)


# --- rebuild ------------------------------------------------------------------------------------------

PROJECTIONS = ("conversations",)


@app.command()
def rebuild(
    name: Annotated[str, typer.Argument(help="Projection to rebuild: conversations (the read models).")] = (
        "conversations"
    ),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build and compare with the live tables; do not swap.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Events per read and write batch.")] = 2000,
) -> None:
    """Replay the log into shadow tables while writers keep writing, then swap them in atomically."""
    if name not in PROJECTIONS:
        err.print(f"error: unknown projection {name!r} (known: {', '.join(PROJECTIONS)})", markup=False)
        raise typer.Exit(2)
    with _errors():
        report = _with_ledger(lambda ledger: _rebuild(ledger, dry_run, batch_size))
        _echo_json(report)
        if dry_run and report["differences_total"]:
            err.print(f"error: {report['differences_total']} rows differ from a rebuild", markup=False)
            raise typer.Exit(1)


async def _rebuild(ledger: ChatLedger, dry_run: bool, batch_size: int) -> dict[str, Any]:
    from chatledger.projections.rebuild import RebuildProgress, rebuild

    with _progress_rate() as progress:
        task = progress.add_task("rebuilding", total=None)

        def tick(p: RebuildProgress) -> None:
            progress.update(task, description=p.phase, completed=p.events_done, total=max(p.events_total, 1))

        report = await rebuild(
            ledger.engine, ledger.store, batch_size=batch_size, dry_run=dry_run, progress=tick
        )
    return {
        "events": report.events,
        "duration_s": round(report.duration_s, 3),
        "events_per_s": round(report.events_per_s),
        "swapped": report.swapped,
        "position": report.position,
        "differences_total": report.differences_total,
        "differences": [
            {
                "table": d.table,
                "key": list(d.key),
                "kind": d.kind,
                "columns": {k: list(v) for k, v in d.columns.items()},
            }
            for d in report.differences
        ],
    }


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} events/s")


def _progress_rate() -> Progress:
    """A bar with throughput (events/s) and ETA, for long replays."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} events"),
        _RateColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        # Not on a terminal (a log, a pipe) a bar is noise, and rich would leave a blank line behind
        # it: errors stay one line on stderr.
        disable=not err.is_terminal,
    )


def _with_ledger(action: Callable[[ChatLedger], Awaitable[T]]) -> T:
    async def run() -> T:
        async with ChatLedger.open(settings=_settings()) as ledger:
            return await action(ledger)

    return _run(run())


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
