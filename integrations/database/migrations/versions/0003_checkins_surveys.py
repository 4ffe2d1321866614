"""Supporter check-ins, survey invitations and survey answers (docs/architecture.md section 8).

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by the old start-up (create_all of today's schema) already has them.
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "checkins" not in present:
        _checkins()
    if "survey_invitations" not in present:
        _survey_invitations()
    if "survey_answers" not in present:
        _survey_answers()


def _checkins() -> None:
    op.create_table(
        "checkins",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("supporter_id", sa.String(40), nullable=False),
        sa.Column("case_id", sa.String(20), nullable=False, server_default=""),
        sa.Column("asked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True)),
        sa.Column("score", sa.Integer()),
        sa.Column("month", sa.String(7), nullable=False),
        sa.UniqueConstraint("case_id", "supporter_id", name="uq_checkins_case_supporter"),
    )
    op.create_index("ix_checkins_supporter_id", "checkins", ["supporter_id"])


def _survey_invitations() -> None:
    op.create_table(
        "survey_invitations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("respondent", sa.String(10), nullable=False),
        sa.Column("institution", sa.String(40), nullable=False, server_default=""),
        sa.Column("role", sa.String(100), nullable=False, server_default=""),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True)),
    )


def _survey_answers() -> None:
    op.create_table(
        "survey_answers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("respondent", sa.String(10), nullable=False),
        sa.Column("institution", sa.String(40), nullable=False, server_default=""),
        sa.Column("role", sa.String(100), nullable=False, server_default=""),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("question_id", sa.String(40), nullable=False),
        sa.Column("answer", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("survey_answers")
    op.drop_table("survey_invitations")
    op.drop_index("ix_checkins_supporter_id", table_name="checkins")
    op.drop_table("checkins")
