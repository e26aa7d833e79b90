"""Where an append's time goes: SQL statements per `add_messages` and a pyinstrument profile.

`python -m bench.profile [N]` prints the statements of one append and the profile of N appends by one
writer on PostgreSQL (its own throwaway database); the text profile goes to bench/results/profile.txt.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pyinstrument import Profiler
from sqlalchemy import event

from chatledger.eventstore import driver

from .append import USER, ledger, start_many
from .env import bench_env
from .load import content

OUT = Path(__file__).resolve().parent / "results" / "profile.txt"


async def statements_per_append(url: str) -> list[str]:
    """The SQL an `add_messages` of one message sends, in order (transaction control included)."""
    seen: list[str] = []
    async with ledger(url) as led:
        (cid,) = await start_many(led, 1)
        await led.add_messages(cid, user_id=USER, messages=[{"role": "user", "content": "warm"}])

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            seen.append(" ".join(statement.split())[:100])

        def tx(name: str) -> Any:
            return lambda *args: seen.append(name)

        sync = led.engine.sync_engine
        event.listen(sync, "before_cursor_execute", record)
        for name in ("begin", "commit", "rollback"):
            event.listen(sync, name, tx(name.upper()))
        # Hot statements skip SQLAlchemy's execute (eventstore/driver.py): count those too.
        on_driver = driver._on_driver

        async def counted(conn: Any, stmt: Any, call: Any) -> Any:
            seen.append("driver: " + " ".join(stmt.sql.split())[:92])
            return await on_driver(conn, stmt, call)

        driver._on_driver = counted
        try:
            await led.add_messages(cid, user_id=USER, messages=[{"role": "user", "content": "hi"}])
        finally:
            driver._on_driver = on_driver
    return seen


async def profile_appends(url: str, count: int) -> str:
    async with ledger(url) as led:
        (cid,) = await start_many(led, 1)
        for n in range(50):
            await led.add_messages(cid, user_id=USER, messages=[{"role": "user", "content": content(0, n)}])
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
        for n in range(count):
            await led.add_messages(cid, user_id=USER, messages=[{"role": "user", "content": content(0, n)}])
        profiler.stop()
    return profiler.output_text(unicode=False, color=False, show_all=False)


async def main(count: int) -> None:
    async with bench_env() as env:
        seen = await statements_per_append(env.pg_url)
        print(f"{len(seen)} statements / transaction-control calls for one add_messages:")
        print("\n".join(f"  {s}" for s in seen))
        print(Counter(s.split()[0] for s in seen))
        text = await profile_appends(env.pg_url, count)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
