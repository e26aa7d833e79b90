"""conversations.tool_call_count: tool calls opened by the visible assistant messages.

The migration only adds the column (0 for every existing row); `chatledger rebuild` then fills it for
all history from the log (docs/rebuild.md). New events keep it exact through the inline projector.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "conversations",
        sa.Column("tool_call_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    # batch mode: SQLite rebuilds the table, PostgreSQL runs a plain ALTER TABLE ... DROP COLUMN.
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("tool_call_count")
