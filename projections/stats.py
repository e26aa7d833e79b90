"""Counts for `chatledger stats`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chatledger.eventstore.schema import events, streams

from .schema import LIVE


async def log_stats(conn: AsyncConnection, head: int) -> dict[str, Any]:
    async def scalar(stmt: Any) -> int:
        return int((await conn.execute(stmt)).scalar_one() or 0)

    c, m = LIVE.conversations, LIVE.messages
    return {
        "streams": await scalar(sa.select(sa.func.count()).select_from(streams)),
        "events": await scalar(sa.select(sa.func.count()).select_from(events)),
        "users": await scalar(sa.select(sa.func.count(sa.distinct(streams.c.partition)))),
        "conversations": await scalar(sa.select(sa.func.count()).select_from(c)),
        "messages": await scalar(sa.select(sa.func.count()).select_from(m)),
        "head_position": head,
    }
