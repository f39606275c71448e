"""The schema as `create_all` made it before migrations: adopted (stamped) as it is.

Revision ID: 0001
Revises: -
Create Date: 2026-11-23 13:04:06.487744
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Frozen here, not taken from storage/models.py: the models move on, this revision must not.
    op.create_table(
        "categories",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name_zh", sa.String(length=100), nullable=False),
        sa.Column("name_en", sa.String(length=100), nullable=False),
        sa.Column("sla_seconds", sa.Integer(), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "fsm",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=200), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("update_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_inbox_prune", "inbox", ["status", "received_at"], unique=False)
    op.create_index("ix_inbox_status", "inbox", ["status", "id"], unique=False)
    op.create_index("ix_inbox_update_id", "inbox", ["update_id", "received_at"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["nodes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_index("ix_nodes_chat_id", "nodes", ["chat_id"], unique=False)
    op.create_index("ix_nodes_parent_id", "nodes", ["parent_id"], unique=False)

    op.create_table(
        "org_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("verify_within", sa.Integer(), nullable=True),
        sa.Column("remind_at", sa.Float(), nullable=True),
        sa.Column("overdue_repeat", sa.Integer(), nullable=True),
        sa.Column("escalate_after", sa.Integer(), nullable=True),
        sa.Column("rating_within", sa.Integer(), nullable=True),
        sa.Column("quiet_start", sa.String(length=5), nullable=True),
        sa.Column("quiet_end", sa.String(length=5), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=True),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("photos", sa.JSON(), nullable=False),
        sa.Column("buttons", sa.JSON(), nullable=False),
        sa.Column("markup", sa.JSON(), nullable=True),
        sa.Column("reply_to_message_id", sa.BigInteger(), nullable=True),
        sa.Column("fallback_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("fallback_reply_to", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("parts_done", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_message_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_outbox_age", "outbox", ["status", "created_at"], unique=False)
    op.create_index("ix_outbox_case_id", "outbox", ["case_id"], unique=False)
    op.create_index("ix_outbox_chat", "outbox", ["chat_id", "status", "id"], unique=False)
    op.create_index("ix_outbox_chat_id", "outbox", ["chat_id"], unique=False)
    op.create_index("ix_outbox_due", "outbox", ["status", "not_before"], unique=False)
    op.create_index("ix_outbox_person_id", "outbox", ["person_id"], unique=False)

    op.create_table(
        "pending_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("media_group_id", sa.String(length=64), nullable=True),
        sa.Column("file_id", sa.String(length=255), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("intent", sa.Boolean(), nullable=False),
        sa.Column("on_behalf_of_id", sa.BigInteger(), nullable=True),
        sa.Column("on_behalf_of_name", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chat_id", "message_id"),
    )
    op.create_index("ix_pending_photos_chat_id", "pending_photos", ["chat_id"], unique=False)
    op.create_index(
        "ix_pending_photos_media_group_id", "pending_photos", ["media_group_id"], unique=False
    )

    op.create_table(
        "report_prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chat_id", "message_id"),
    )
    op.create_index("ix_report_prompts_chat_id", "report_prompts", ["chat_id"], unique=False)

    op.create_table(
        "bind_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("old_node_id", sa.Integer(), nullable=True),
        sa.Column("old_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["old_node_id"],
            ["nodes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_bind_requests_chat_id", "bind_requests", ["chat_id"], unique=False)
    op.create_index("ix_bind_requests_created_at", "bind_requests", ["created_at"], unique=False)

    op.create_table(
        "people",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("dm_ok", sa.Boolean(), nullable=True),
        sa.Column("building_id", sa.Integer(), nullable=True),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["building_id"],
            ["nodes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"],
            ["nodes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rev", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("verified", sa.String(length=16), nullable=False),
        sa.Column("building_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("reporter_id", sa.BigInteger(), nullable=True),
        sa.Column("submitted_by_id", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("source_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("source_message_id", sa.BigInteger(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clock_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assignee_id", sa.BigInteger(), nullable=True),
        sa.Column("assignee_ack_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_by_id", sa.BigInteger(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by_id", sa.BigInteger(), nullable=True),
        sa.Column("rating", sa.String(length=16), nullable=True),
        sa.Column("rating_comment", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.String(length=32), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["accepted_by_id"],
            ["people.id"],
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["people.id"],
        ),
        sa.ForeignKeyConstraint(
            ["building_id"],
            ["nodes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["category"],
            ["categories.code"],
        ),
        sa.ForeignKeyConstraint(
            ["reporter_id"],
            ["people.id"],
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by_id"],
            ["people.id"],
        ),
        sa.ForeignKeyConstraint(
            ["submitted_by_id"],
            ["people.id"],
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"],
            ["nodes.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cases_building_id", "cases", ["building_id"], unique=False)
    op.create_index(
        "ix_cases_building_status", "cases", ["building_id", "status", "deadline_at"], unique=False
    )
    op.create_index("ix_cases_due", "cases", ["next_check_at"], unique=False)
    op.create_index("ix_cases_reporter_id", "cases", ["reporter_id"], unique=False)
    op.create_index("ix_cases_status", "cases", ["status"], unique=False)
    op.create_index("ix_cases_submitter", "cases", ["submitted_by_id", "reported_at"], unique=False)

    op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["people.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("person_id", "role", "node_id"),
    )
    op.create_index("ix_roles_node_id", "roles", ["node_id"], unique=False)
    op.create_index("ix_roles_person_id", "roles", ["person_id"], unique=False)

    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_events_case_id", "case_events", ["case_id"], unique=False)

    op.create_table(
        "case_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_photos_case_id", "case_photos", ["case_id"], unique=False)

    op.create_table(
        "case_timer_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=24), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("basis", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "round", "step", "n", "basis"),
    )


def downgrade() -> None:
    # Everything goes: only for a database that holds nothing worth keeping.
    op.drop_table("case_timer_steps")
    op.drop_table("case_photos")
    op.drop_table("case_events")
    op.drop_table("roles")
    op.drop_table("cases")
    op.drop_table("people")
    op.drop_table("bind_requests")
    op.drop_table("report_prompts")
    op.drop_table("pending_photos")
    op.drop_table("outbox")
    op.drop_table("org_settings")
    op.drop_table("nodes")
    op.drop_table("inbox")
    op.drop_table("fsm")
    op.drop_table("categories")
