"""Read tables. Every row carries the partition key (`user_id`, the owner) so they can be sharded later.

`read_tables(suffix)` builds the same tables under other names, so a rebuild can fill shadow copies and
swap them in.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

metadata = sa.MetaData()


@dataclass(frozen=True)
class ReadTables:
    conversations: sa.Table
    messages: sa.Table
    tool_calls: sa.Table

    def all(self) -> tuple[sa.Table, ...]:
        return (self.conversations, self.messages, self.tool_calls)


def read_tables(suffix: str = "", meta: sa.MetaData | None = None) -> ReadTables:
    meta = metadata if meta is None else meta
    conversations = sa.Table(
        f"conversations{suffix}",
        meta,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("title", sa.Text, nullable=True),
        # A derived title may still be replaced by the first user message; an explicit one never is.
        sa.Column("title_explicit", sa.Boolean, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("message_count", sa.BigInteger, nullable=False),
        # seq of the newest message ever added: seq keeps counting after removals and clears.
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        # Tool calls opened by the visible assistant messages (migration 0002, filled by a rebuild).
        sa.Column("tool_call_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    sa.Index(
        f"ix_conversations{suffix}_user_recent",
        conversations.c.user_id,
        conversations.c.updated_at.desc(),
        conversations.c.id.desc(),
    )
    messages = sa.Table(
        f"messages{suffix}",
        meta,
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
        sa.Column("raw", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("conversation_id", "message_id", name=f"uq_messages{suffix}_message_id"),
    )
    tool_calls = sa.Table(
        f"tool_calls{suffix}",
        meta,
        sa.Column("conversation_id", sa.String(64), primary_key=True),
        sa.Column("call_id", sa.String(256), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("assistant_message_id", sa.String(64), nullable=False),
        sa.Column("answer_message_id", sa.String(64), nullable=True),
    )
    sa.Index(
        f"ix_tool_calls{suffix}_assistant", tool_calls.c.conversation_id, tool_calls.c.assistant_message_id
    )
    return ReadTables(conversations, messages, tool_calls)


LIVE = read_tables()

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("user_id", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("route", sa.String(512), nullable=False),
    sa.Column("body_sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("response", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_idempotency_keys_created_at", idempotency_keys.c.created_at)

projection_checkpoints = sa.Table(
    "projection_checkpoints",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
