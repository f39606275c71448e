"""Duplicates and followers, merge and split, notices with read receipts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("followers", sa.Integer(), nullable=False,
                                     server_default="0"))
    op.add_column("cases", sa.Column("merged_into_id", sa.Integer(), nullable=True))
    op.add_column("cases", sa.Column("split_from_id", sa.Integer(), nullable=True))
    op.add_column("org_settings", sa.Column("duplicate_window", sa.Integer(), nullable=True,
                                            server_default="259200"))
    op.add_column("org_settings", sa.Column("duplicate_radius", sa.Float(), nullable=False,
                                            server_default="50"))
    op.create_table(
        "case_followers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("person_id", sa.BigInteger(), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("source_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("source_message_id", sa.BigInteger(), nullable=True),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("case_id", "person_id"),
    )
    op.create_index("ix_case_followers_case_id", "case_followers", ["case_id"])
    op.create_index("ix_case_followers_person_id", "case_followers", ["person_id"])
    op.create_table(
        "duplicate_offers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("case_id", sa.Integer(), sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("person_id", sa.BigInteger(), sa.ForeignKey("people.id"), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("filed_case_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_duplicate_offers_case_id", "duplicate_offers", ["case_id"])
    op.create_index("ix_duplicate_offers_person_id", "duplicate_offers", ["person_id"])
    op.create_index("ix_duplicate_offers_due", "duplicate_offers", ["status", "due_at"])
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), primary_key=True),
        # Nullable: erasing a former sender (gridbot erase) keeps the notice without them.
        sa.Column("sender_id", sa.BigInteger(), sa.ForeignKey("people.id"), nullable=True),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("photos", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_notices_sender_id", "notices", ["sender_id"])
    op.create_index("ix_notices_sent_at", "notices", ["sent_at"])
    op.create_table(
        "notice_copies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("notice_id", sa.Integer(), sa.ForeignKey("notices.id"), nullable=False),
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("confirmed_by_id", sa.BigInteger(), sa.ForeignKey("people.id"), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("notice_id", "node_id"),
    )
    op.create_index("ix_notice_copies_notice_id", "notice_copies", ["notice_id"])


def downgrade() -> None:
    op.drop_table("notice_copies")
    op.drop_table("notices")
    op.drop_table("duplicate_offers")
    op.drop_table("case_followers")
    op.drop_column("org_settings", "duplicate_radius")
    op.drop_column("org_settings", "duplicate_window")
    # SQLite drops a column in place since 3.35; a batch would copy the table.
    for name in ("split_from_id", "merged_into_id", "followers"):
        op.drop_column("cases", name)
