"""The grid's own rounds (issue 22): patrols (巡查) with their points, items and buildings,
care rosters and visits (走访), campaigns (专项任务) and each grid's part; cases found by
staff (`source`, `patrol_id`); reminders about a household or a campaign's grid as well as
cases; the patrol radius and the district's own care kinds.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 12:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("org_settings", sa.Column("patrol_radius", sa.Float(), nullable=False,
                                            server_default="50"))
    op.add_column("org_settings", sa.Column("care_kinds", sa.JSON(), nullable=True))
    op.add_column("cases", sa.Column("source", sa.String(16), nullable=False,
                                     server_default=""))
    op.add_column("cases", sa.Column("patrol_id", sa.Integer(), nullable=True))
    op.create_table(
        "patrols",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("grid_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("ended_by_timeout", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_patrols_grid_started", "patrols", ["grid_id", "started_at"])
    op.create_index("ix_patrols_person_started", "patrols", ["person_id", "started_at"])
    op.create_table(
        "patrol_points",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patrol_id", sa.Integer(),
                  sa.ForeignKey("patrols.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("live", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_patrol_points_patrol_id", "patrol_points", ["patrol_id"])
    op.create_table(
        "patrol_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patrol_id", sa.Integer(),
                  sa.ForeignKey("patrols.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("file_id", sa.String(255), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("case_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_patrol_items_patrol_id", "patrol_items", ["patrol_id"])
    op.create_table(
        "patrol_buildings",
        sa.Column("patrol_id", sa.Integer(),
                  sa.ForeignKey("patrols.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("building_id", sa.Integer(), sa.ForeignKey("nodes.id"), primary_key=True),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "care_households",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("building_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False, server_default=""),
        sa.Column("door", sa.String(32), nullable=False),
        sa.Column("names", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("interval", sa.String(8), nullable=False),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_visit_at", TS, nullable=True),
        sa.Column("next_due_at", TS, nullable=True),
        sa.UniqueConstraint("building_id", "unit", "door"),
    )
    op.create_index("ix_care_households_building_id", "care_households", ["building_id"])
    op.create_index("ix_care_households_due", "care_households", ["active", "next_due_at"])
    op.create_table(
        "care_visits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("household_id", sa.Integer(),
                  sa.ForeignKey("care_households.id", ondelete="CASCADE"), nullable=False),
        sa.Column("person_id", sa.BigInteger(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("photos", sa.JSON(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("need_found", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("case_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_care_visits_household_at", "care_visits", ["household_id", "at"])
    op.create_index("ix_care_visits_person_id", "care_visits", ["person_id"])
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("photos", sa.JSON(), nullable=False),
        sa.Column("sender_id", sa.BigInteger(), nullable=False),
        sa.Column("scope_node_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("deadline_at", TS, nullable=False),
        sa.Column("needs_location", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("summary_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("summary_message_id", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_campaigns_sender_id", "campaigns", ["sender_id"])
    op.create_index("ix_campaigns_deadline_at", "campaigns", ["deadline_at"])
    op.create_table(
        "campaign_grids",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(),
                  sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("grid_id", sa.Integer(), sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.Column("done_by_id", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("photos", sa.JSON(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("leader_alerted_at", TS, nullable=True),
        sa.Column("sender_alerted_at", TS, nullable=True),
        sa.UniqueConstraint("campaign_id", "grid_id"),
    )
    op.create_index("ix_campaign_grids_status", "campaign_grids", ["status", "campaign_id"])
    # Reminders about a household's visit or a campaign's grid as well as cases. The table
    # is copied (SQLite cannot make a column nullable in place); nothing refers to it.
    with op.batch_alter_table("reminders") as batch:
        batch.alter_column("case_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("household_id", sa.Integer(), sa.ForeignKey(
            "care_households.id", name="fk_reminders_household", ondelete="CASCADE"),
            nullable=True))
        batch.add_column(sa.Column("campaign_grid_id", sa.Integer(), sa.ForeignKey(
            "campaign_grids.id", name="fk_reminders_campaign_grid", ondelete="CASCADE"),
            nullable=True))
        batch.create_index("ix_reminders_household_id", ["household_id"])
        batch.create_index("ix_reminders_campaign_grid_id", ["campaign_grid_id"])


def downgrade() -> None:
    with op.batch_alter_table("reminders") as batch:
        batch.drop_index("ix_reminders_campaign_grid_id")
        batch.drop_index("ix_reminders_household_id")
        batch.drop_column("campaign_grid_id")
        batch.drop_column("household_id")
        batch.alter_column("case_id", existing_type=sa.Integer(), nullable=False)
    op.drop_table("campaign_grids")
    op.drop_table("campaigns")
    op.drop_table("care_visits")
    op.drop_table("care_households")
    op.drop_table("patrol_buildings")
    op.drop_table("patrol_items")
    op.drop_table("patrol_points")
    op.drop_table("patrols")
    op.drop_column("cases", "patrol_id")
    op.drop_column("cases", "source")
    op.drop_column("org_settings", "care_kinds")
    op.drop_column("org_settings", "patrol_radius")
