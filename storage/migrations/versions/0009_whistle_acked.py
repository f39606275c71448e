"""The reminder to a department that acknowledged a whistle but has not reported it done
(issue 19): the case's timer reads the earliest such acknowledgement from the case row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("whistle_acked_at", sa.DateTime(timezone=True),
                                     nullable=True))
    # Whistles acknowledged before this revision and still open get their reminder too.
    op.execute(
        "UPDATE cases SET whistle_acked_at = (SELECT MIN(w.acked_at) FROM whistles w "
        "WHERE w.case_id = cases.id AND w.status = 'acked') "
        "WHERE status IN ('open', 'accepted', 'assigned')")


def downgrade() -> None:
    # SQLite drops a column in place since 3.35; a batch would copy the table.
    op.drop_column("cases", "whistle_acked_at")
