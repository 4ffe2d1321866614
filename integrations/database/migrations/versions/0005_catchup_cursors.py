"""How far the catch-up job has read each form system (workflows/catchup.py).

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database adopted from before migrations (create_all of the code's tables) may have it.
    if "catchup_cursors" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "catchup_cursors",
        sa.Column("source", sa.String(40), primary_key=True),
        sa.Column("read_to", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("catchup_cursors")
