"""The deadline a category change or a registry edit could not move (issue 19).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("deadline_offset_seconds", sa.Integer(), nullable=False,
                                     server_default="0"))


def downgrade() -> None:
    # SQLite drops a column in place since 3.35; a batch would copy the table.
    op.drop_column("cases", "deadline_offset_seconds")
