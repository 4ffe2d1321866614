"""The schema as it stood when migrations began: every table the service had.

Frozen: later changes are new revisions, never edits here. `baseline(meta)` is also what an
unversioned database made by the old start-up (create_all) is brought to before it is stamped
with this revision (`migrate.adopt`).

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def baseline(meta: sa.MetaData) -> sa.MetaData:
    """Declare the baseline tables on `meta`."""
    sa.Table(
        "case_milestones", meta,
        sa.Column("case_id", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(60), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "case_refs", meta,
        sa.Column("source_key", sa.String(200), primary_key=True),
        sa.Column("case_id", sa.String(20), nullable=False, unique=True),
    )
    sa.Table(
        "cases", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("for_whom", sa.Text(), nullable=False, server_default=""),
        sa.Column("requester_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("requester_phone", sa.Text(), nullable=False, server_default=""),
        sa.Column("requester_email", sa.Text(), nullable=False, server_default=""),
        sa.Column("referrer_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("referrer_phone", sa.Text(), nullable=False, server_default=""),
        sa.Column("referrer_email", sa.Text(), nullable=False, server_default=""),
        sa.Column("preferred_contact", sa.Text(), nullable=False, server_default=""),
        sa.Column("institution", sa.Text(), nullable=False, server_default=""),
        sa.Column("department", sa.Text(), nullable=False, server_default=""),
        sa.Column("role", sa.Text(), nullable=False, server_default=""),
        sa.Column("specialty", sa.Text(), nullable=False, server_default=""),
        sa.Column("role_preference", sa.Text(), nullable=False, server_default=""),
        sa.Column("department_preference", sa.Text(), nullable=False, server_default=""),
        sa.Column("outside_my_institution", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("urgency", sa.Text(), nullable=False, server_default=""),
        sa.Column("flyer", sa.Text(), nullable=False, server_default=""),
        sa.Column("case_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("source", sa.Text(), nullable=False, server_default=""),
        sa.Column("source_response_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("submitted_at", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text(), nullable=False, server_default=""),
        sa.Column("review_due", sa.DateTime(timezone=True)),
        sa.Column("suggested_supporters", sa.Text(), nullable=False, server_default=""),
        sa.Column("assigned_supporter", sa.Text(), nullable=False, server_default=""),
        sa.Column("offer_expires", sa.DateTime(timezone=True)),
        sa.Column("contact_made_at", sa.DateTime(timezone=True)),
        sa.Column("tier3_referral", sa.Text(), nullable=False, server_default=""),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("survey_sent_at", sa.DateTime(timezone=True)),
        sa.Column("purged_at", sa.DateTime(timezone=True)),
        sa.Column("problems", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint('source_response_id'),
        sa.UniqueConstraint('case_id'),
    )
    sa.Table(
        "events", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(20), nullable=False, index=True),
        sa.Column("event", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
    )
    sa.Table(
        "inbox", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("source_key", sa.String(200), nullable=False, unique=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("case_id", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "locks", meta,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "messages", meta,
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("case_id", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("recipient_role", sa.String(30), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider_id", sa.String(100), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("template", sa.String(100), nullable=False, server_default=""),
        sa.Column("values_json", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("crisis", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("body_digest", sa.String(64), nullable=False, server_default=""),
        sa.Column("alerted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("mirror_due", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    sa.Table(
        "offers", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(20), nullable=False, index=True),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("supporter_id", sa.String(40), nullable=False, index=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint('case_id', 'round'),
    )
    sa.Table(
        "opt_outs", meta,
        sa.Column("channel", sa.String(10), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "outbox", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("message_key", sa.String(300), nullable=False, unique=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("case_id", sa.String(20), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )
    sa.Table(
        "resources", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("institution", sa.Text(), nullable=False, server_default=""),
        sa.Column("kind", sa.Text(), nullable=False, server_default=""),
        sa.Column("phone", sa.Text(), nullable=False, server_default=""),
        sa.Column("url", sa.Text(), nullable=False, server_default=""),
        sa.Column("hours", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint('name', 'institution'),
    )
    sa.Table(
        "reviewers", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("phone", sa.Text(), nullable=False, server_default=""),
        sa.Column("email", sa.Text(), nullable=False, server_default=""),
        sa.Column("institution", sa.Text(), nullable=False, server_default=""),
        sa.Column("on_call", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("program_lead", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.UniqueConstraint('name', 'institution'),
    )
    sa.Table(
        "staff", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("institutions", sa.Text(), nullable=False, server_default=""),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "staff_login_failures", meta,
        sa.Column("email_hash", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("blocked_until", sa.DateTime(timezone=True)),
        sa.Column("last_failure_at", sa.DateTime(timezone=True)),
    )
    sa.Table(
        "staff_sessions", meta,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.Integer(), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "supporters", meta,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("phone", sa.Text(), nullable=False, server_default=""),
        sa.Column("email", sa.Text(), nullable=False, server_default=""),
        sa.Column("institution", sa.Text(), nullable=False, server_default=""),
        sa.Column("department", sa.Text(), nullable=False, server_default=""),
        sa.Column("role", sa.Text(), nullable=False, server_default=""),
        sa.Column("specialty", sa.Text(), nullable=False, server_default=""),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("max_open_cases", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("paused_until", sa.DateTime(timezone=True)),
        sa.Column("last_assigned_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint('name', 'institution'),
    )
    sa.Table(
        "webhook_events", meta,
        sa.Column("source", sa.String(20), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    return meta


def upgrade() -> None:
    baseline(sa.MetaData()).create_all(op.get_bind())


def downgrade() -> None:
    baseline(sa.MetaData()).drop_all(op.get_bind())
