"""Flyers (the case store's Flyers table, when the store is this database) and the scan
counts of their QR codes per tag and day (docs/architecture.md section 6).

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database adopted from before migrations (create_all of the code's tables) may have
    # them already.
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "flyers" not in present:
        _create_flyers()
    if "flyer_scans" not in present:
        _create_flyer_scans()


def _create_flyers() -> None:
    op.create_table(
        "flyers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tag", sa.Text(), nullable=False, server_default=""),
        sa.Column("institution", sa.Text(), nullable=False, server_default=""),
        sa.Column("unit", sa.Text(), nullable=False, server_default=""),
        sa.Column("form", sa.Text(), nullable=False, server_default=""),
        sa.Column("link", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("tag"),
    )


def _create_flyer_scans() -> None:
    op.create_table(
        "flyer_scans",
        sa.Column("tag", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("flyer_scans")
    op.drop_table("flyers")
