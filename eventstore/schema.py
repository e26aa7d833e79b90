"""Tables of the log. Alembic migrations mirror these definitions; production never calls create_all."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

streams = sa.Table(
    "streams",
    metadata,
    sa.Column("stream_id", sa.String(64), primary_key=True),
    # The shard key (for chat: the owner's user id); kept on every row so the log can be sharded later.
    sa.Column("partition", sa.String(255), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    # Assigned by the store (not autoincrement): see postgres.py for why positions follow commit order.
    sa.Column("global_position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("stream_id", sa.String(64), nullable=False),
    sa.Column("stream_version", sa.BigInteger, nullable=False),
    sa.Column("partition", sa.String(255), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    # JSON, not JSONB: the stored text keeps client key order (raw provider items round-trip).
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # PostgreSQL: pg_current_xact_id() of the writing transaction (the read_all watermark). NULL on SQLite.
    sa.Column("tx_id", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("stream_id", "stream_version", name="uq_events_stream_version"),
)
sa.Index("ix_events_partition", events.c.partition)
