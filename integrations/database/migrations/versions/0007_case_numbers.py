"""Case IDs from a number the database gives once (case_numbers), not drawn at random.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database adopted from before migrations (create_all of the code's tables) may have it.
    if "case_numbers" in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        "case_numbers",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_key", sa.String(200), nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("case_numbers")
