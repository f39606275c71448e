"""The handling workflow of the standard: 延期 (extension requests), 挂账 (suspension), 核查
(on-site check), 吹哨报到 (departments called in), and one kind of 返工 (rework) in history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 18:40:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Columns added to tables that exist (made afresh at each call: a Column belongs to one
# table once added). `op.add_column`, not a batch: SQLite adds a column in
# place, without copying `cases`. Every NOT NULL one has a server default, so existing rows
# and inserts that name their columns (bench/gen.py) need no value.
def _cases() -> list[sa.Column[Any]]:
    return [
        sa.Column("extended_seconds", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("extension_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("request_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked", sa.String(length=16), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("whistle_due_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _settings() -> list[sa.Column[Any]]:
    return [
        sa.Column("max_extensions", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("extension_answer_within", sa.Integer(), nullable=True),
        sa.Column("check_all", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("check_within", sa.Integer(), nullable=True),
        sa.Column("whistle_ack_within", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    for column in _cases():
        op.add_column("cases", column)
    op.add_column("categories", sa.Column("check_required", sa.Boolean(), nullable=False,
                                          server_default=sa.false()))
    for column in _settings():
        op.add_column("org_settings", column)
    # The registry's defaults, which a registry without the keys means: 1d to answer a
    # request, 1d to check, 30m for a department to acknowledge.
    op.execute("UPDATE org_settings SET extension_answer_within = 86400, "
               "check_within = 86400, whistle_ack_within = 1800")

    op.create_table(
        "departments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_index("ix_departments_chat_id", "departments", ["chat_id"])
    op.create_table(
        "department_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["department_id"], ["departments.id"]),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("department_id", "person_id"),
    )
    op.create_index("ix_department_members_department_id", "department_members",
                    ["department_id"])
    op.create_index("ix_department_members_person_id", "department_members", ["person_id"])
    op.create_table(
        "case_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("approver_level", sa.String(length=16), nullable=False),
        sa.Column("requested_by_id", sa.BigInteger(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Integer(), nullable=True),
        sa.Column("review_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_by_id", sa.BigInteger(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answer_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_requests_case", "case_requests", ["case_id", "status"])
    op.create_table(
        "whistles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("called_by_id", sa.BigInteger(), nullable=True),
        sa.Column("called_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ask", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ack_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by_id", sa.BigInteger(), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by_id", sa.BigInteger(), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"]),
        sa.ForeignKeyConstraint(["department_id"], ["departments.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_whistles_case", "whistles", ["case_id", "status"])

    # 返工 is one thing: a case reopened by 不满意 was recorded as `reopen`; a failed check
    # will be `rework` too, told apart by from_status (resolved / checking).
    op.execute("UPDATE case_events SET action = 'rework' WHERE action = 'reopen'")


def downgrade() -> None:
    # Only 不满意 reworks (from resolved) were `reopen` before; a failed check's have no name
    # there and stay `rework`.
    op.execute("UPDATE case_events SET action = 'reopen' "
               "WHERE action = 'rework' AND from_status = 'resolved'")
    op.drop_index("ix_whistles_case", "whistles")
    op.drop_table("whistles")
    op.drop_index("ix_case_requests_case", "case_requests")
    op.drop_table("case_requests")
    op.drop_index("ix_department_members_person_id", "department_members")
    op.drop_index("ix_department_members_department_id", "department_members")
    op.drop_table("department_members")
    op.drop_index("ix_departments_chat_id", "departments")
    op.drop_table("departments")
    # ALTER TABLE … DROP COLUMN in place (SQLite ≥ 3.35), not a batch's copy of the table: a
    # copy drops `categories` and `cases`, which rows of other tables point at.
    for column in reversed(_settings()):
        op.drop_column("org_settings", column.name)
    op.drop_column("categories", "check_required")
    for column in reversed(_cases()):
        op.drop_column("cases", column.name)
