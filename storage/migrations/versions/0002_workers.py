"""Workers sharing the database (their share of Telegram's overall limit), and the index a
worker paces a chat it takes over by.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 15:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_workers_seen_at", "workers", ["seen_at"])
    op.create_index("ix_outbox_chat_sent", "outbox", ["chat_id", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_chat_sent", "outbox")
    op.drop_index("ix_workers_seen_at", "workers")
    op.drop_table("workers")
