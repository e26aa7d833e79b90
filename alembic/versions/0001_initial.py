"""Event log (streams, events) and read models (conversations, messages, tool_calls), idempotency keys,
projection checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("stream_id", sa.String(64), primary_key=True),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("global_position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("stream_version", sa.BigInteger, nullable=False),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("tx_id", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("stream_id", "stream_version", name="uq_events_stream_version"),
    )
    op.create_index("ix_events_partition", "events", ["partition"])
    create_read_tables("")
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("route", sa.String(512), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "projection_checkpoints",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )


def create_read_tables(suffix: str) -> None:
    op.create_table(
        f"conversations{suffix}",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("title", sa.Text, nullable=True),
        sa.Column("title_explicit", sa.Boolean, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("message_count", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("last_message_at", TZ, nullable=True),
    )
    op.create_index(
        f"ix_conversations{suffix}_user_recent",
        f"conversations{suffix}",
        ["user_id", sa.text("updated_at DESC"), sa.text("id DESC")],
    )
    op.create_table(
        f"messages{suffix}",
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("tool_calls", sa.JSON, nullable=True),
        sa.Column("tool_call_id", sa.String(256), nullable=True),
        sa.Column("token_count", sa.Integer, nullable=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("raw", sa.JSON, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("conversation_id", "message_id", name=f"uq_messages{suffix}_message_id"),
    )
    op.create_table(
        f"tool_calls{suffix}",
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("call_id", sa.String(256), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("assistant_message_id", sa.String(64), nullable=False),
        sa.Column("answer_message_id", sa.String(64), nullable=True),
    )
    op.create_index(
        f"ix_tool_calls{suffix}_assistant", f"tool_calls{suffix}", ["conversation_id", "assistant_message_id"]
    )


def downgrade() -> None:
    for name in (
        "projection_checkpoints",
        "idempotency_keys",
        "tool_calls",
        "messages",
        "conversations",
        "events",
        "streams",
    ):
        op.drop_table(name)
