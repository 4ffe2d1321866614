"""The inbox remembers each row's queue lane (priority) and when its task was queued (queued_at),
so retries and sweeps keep a crisis in the crisis lane and the sweep leaves rows that are only
waiting in a long queue alone (workflows/tasks.py, workflows/inbox.py).

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database adopted from before migrations (create_all of the code's tables) may have them.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("inbox")}
    # Rows already there have queued_at NULL: the first sweep queues the unfinished ones once,
    # as every sweep did before.
    if "priority" not in present:
        op.add_column("inbox", sa.Column("priority", sa.String(10), nullable=False, server_default="routine"))
    if "queued_at" not in present:
        op.add_column("inbox", sa.Column("queued_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("priority")
