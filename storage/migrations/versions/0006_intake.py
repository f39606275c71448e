"""Smart intake: category keywords, grid boundaries and building points for routing a shared
location, and voice reports.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("categories", sa.Column("keywords", sa.JSON(), nullable=True)),
    ("nodes", sa.Column("boundary", sa.JSON(), nullable=True)),
    ("nodes", sa.Column("lon", sa.Float(), nullable=True)),
    ("nodes", sa.Column("lat", sa.Float(), nullable=True)),
    ("cases", sa.Column("voice_file_id", sa.String(length=255), nullable=True)),
    ("cases", sa.Column("voice_kind", sa.String(length=16), nullable=True)),
    ("cases", sa.Column("voice_seconds", sa.Integer(), nullable=True)),
)


def upgrade() -> None:
    # In place (SQLite adds a nullable column without copying the table).
    for table, column in _COLUMNS:
        op.add_column(table, column)


def downgrade() -> None:
    for table, column in reversed(_COLUMNS):
        op.drop_column(table, column.name)
