"""The ledger and the month: working-time SLAs and the working calendar, the digest's time and
the score's weights, the level an escalation went to, periodic jobs done once, uploads in the
outbox, and the indexes the figures of a period read by.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_cases_reported", "cases", ["reported_at"]),
    ("ix_cases_resolved", "cases", ["resolved_at"]),
    ("ix_cases_deadline", "cases", ["deadline_at"]),
    ("ix_case_events_action_at", "case_events", ["action", "at"]),
)


def upgrade() -> None:
    # `op.add_column`, not a batch: SQLite adds a column in place. Every NOT NULL one has a
    # server default, so existing rows need no value.
    op.add_column("categories", sa.Column("sla_unit", sa.String(length=2), nullable=False,
                                          server_default=""))
    op.add_column("org_settings", sa.Column("calendar", sa.JSON(), nullable=True))
    op.add_column("org_settings", sa.Column("digest_at", sa.String(length=5), nullable=True,
                                            server_default="08:30"))
    op.add_column("org_settings", sa.Column("score_weights", sa.JSON(), nullable=True))
    op.add_column("case_events", sa.Column("level", sa.String(length=16), nullable=True))
    op.add_column("outbox", sa.Column("upload", sa.LargeBinary(), nullable=True))
    op.add_column("outbox", sa.Column("upload_name", sa.String(length=128), nullable=True))
    op.add_column("outbox", sa.Column("upload_kind", sa.String(length=16), nullable=True))
    op.create_table(
        "periodic_runs",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "period"),
    )
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table)
    op.drop_table("periodic_runs")
    # SQLite drops a column in place since 3.35; a batch would copy the table.
    for table, column in (("outbox", "upload_kind"), ("outbox", "upload_name"),
                          ("outbox", "upload"), ("case_events", "level"),
                          ("org_settings", "score_weights"), ("org_settings", "digest_at"),
                          ("org_settings", "calendar"), ("categories", "sla_unit")):
        op.drop_column(table, column)
