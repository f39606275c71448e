"""Chats for busy people (issue 21): reminders gathered per person, a community's hotline
and a building's poster key (扫码报事), and the command menu set per private chat.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("hotline", sa.String(64), nullable=True))
    op.add_column("nodes", sa.Column("door_key", sa.String(32), nullable=True))
    op.create_index("ix_nodes_door_key", "nodes", ["door_key"], unique=True)
    op.create_table(
        "reminders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("dedupe_key", sa.String(128), nullable=False, unique=True),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("fallback_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_reminders_due", "reminders", ["status", "due_at"])
    op.create_index("ix_reminders_person", "reminders", ["person_id", "status"])
    op.create_index("ix_reminders_case_id", "reminders", ["case_id"])
    op.create_index("ix_reminders_outbox_id", "reminders", ["outbox_id"])
    op.create_table(
        "command_menus",
        sa.Column("chat_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("menu", sa.String(64), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("command_menus")
    op.drop_table("reminders")
    op.drop_index("ix_nodes_door_key", "nodes")
    # SQLite drops a column in place since 3.35; a batch would copy the table.
    op.drop_column("nodes", "door_key")
    op.drop_column("nodes", "hotline")
