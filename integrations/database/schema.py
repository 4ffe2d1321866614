"""Every table of the service's own database, in one `metadata` (docs/architecture.md section 6).

The tables are declared here once; `migrations/` changes a live database to match them (a new
column or table needs a revision there too: tests/test_database.py checks the two agree).
"""
from __future__ import annotations

from dataclasses import fields as dc_fields
from datetime import timezone

import sqlalchemy as sa

from workflows.model import Case, Flyer, Resource, Reviewer, Supporter


class UTCDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every engine."""
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData()

inbox = sa.Table(
    "inbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("source_key", sa.String(200), nullable=False, unique=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, default="new"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("lease_until", UTCDateTime),
    sa.Column("last_error", sa.Text, nullable=False, default=""),
    sa.Column("case_id", sa.String(20), nullable=False, default=""),
    sa.Column("updated_at", UTCDateTime),
    # The queue lane the row's work runs in: "routine", "crisis", or "unread" (a form notice
    # whose answers are not fetched yet; it may be a crisis). Retries and the sweep use it.
    sa.Column("priority", sa.String(10), nullable=False, default="routine", server_default="routine"),
    # When the row's task was last put in the queue (or, for a retry, is due to enter it); NULL
    # when no task is known to be queued. The sweep leaves a row queued within its lease alone.
    sa.Column("queued_at", UTCDateTime),
)

case_refs = sa.Table(
    "case_refs", metadata,
    sa.Column("source_key", sa.String(200), primary_key=True),
    sa.Column("case_id", sa.String(20), nullable=False, unique=True),
)

#: Where new Case IDs come from: each case's number is this table's next key, never given
#: twice (AUTOINCREMENT on SQLite, an identity on PostgreSQL), so Case IDs are unique by the
#: database and read `PS-10001`, `PS-10002`, ... (inbox.CASE_NUMBER_BASE). Older Case IDs
#: (`PS-1000` to `PS-9999`, drawn at random) stay in `case_refs` as they are.
case_numbers = sa.Table(
    "case_numbers", metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_key", sa.String(200), nullable=False),
    sqlite_autoincrement=True,
)

locks = sa.Table(
    "locks", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("case_id", sa.String(20), nullable=False),
    sa.Column("kind", sa.String(60), nullable=False),
    sa.Column("channel", sa.String(10), nullable=False),
    sa.Column("recipient_role", sa.String(30), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("provider_id", sa.String(100), nullable=False, default=""),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("claimed_until", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # What is needed to send (or send again) later without the case at hand: the template's
    # name and its placeholder values (never free text: templates may only use the
    # placeholders their channel allows), whether quiet hours apply, and the retry state.
    sa.Column("template", sa.String(100), nullable=False, server_default=""),
    sa.Column("values_json", sa.Text, nullable=False, server_default="{}"),
    sa.Column("crisis", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime),
    # SHA-256 of the text as handed to the provider: finds an earlier send after a crash
    # without keeping the text.
    sa.Column("body_digest", sa.String(64), nullable=False, server_default=""),
    # A program lead has been told that this message could not reach its person.
    sa.Column("alerted", sa.Boolean, nullable=False, server_default=sa.false()),
    # The Messages mirror (Airtable) missed the last change; the periodic task retries it.
    sa.Column("mirror_due", sa.Boolean, nullable=False, server_default=sa.false()),
)

#: Numbers and addresses that asked us to stop (SMS STOP, Twilio 21610): never sent to.
opt_outs = sa.Table(
    "opt_outs", metadata,
    sa.Column("channel", sa.String(10), primary_key=True),
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
)

#: Provider webhook deliveries already applied (SendGrid sg_event_id), for dedupe.
webhook_events = sa.Table(
    "webhook_events", metadata,
    sa.Column("source", sa.String(20), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
)

#: Each offer of a case to a supporter (workflows/offers.py): the truth for who may still be
#: offered a case, and for races between answers. Ids only. `round` counts a case's offers.
#: status: open, accepted, declined, expired, unreachable (the SMS could not go), withdrawn
#: (a coordinator changed the case meanwhile), no_contact (accepted, then the supporter could not
#: reach the person).
offers = sa.Table(
    "offers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(20), nullable=False, index=True),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("supporter_id", sa.String(40), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("offered_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("answered_at", UTCDateTime),
    sa.UniqueConstraint("case_id", "round"),
)

#: Steps of a case that happen once (a reminder, an escalation, "nobody left"): written after
#: the step's messages and Event, so a crash repeats the step (the ledger keeps the messages
#: to one each) rather than losing it.
case_milestones = sa.Table(
    "case_milestones", metadata,
    sa.Column("case_id", sa.String(20), primary_key=True),
    sa.Column("name", sa.String(60), primary_key=True),
    sa.Column("at", UTCDateTime, nullable=False),
)

outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_key", sa.String(300), nullable=False, unique=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("channel", sa.String(10), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("case_id", sa.String(20), nullable=False),
    sa.Column("subject", sa.Text, nullable=False, default=""),
    sa.Column("body", sa.Text, nullable=False),
)

#: The purge of a case, per sink (workflows/purge.py): what is done, what is pending, and the
#: receipt. `sink`: store, database, sms, email, receipt. `detail` is JSON of ids and counts,
#: except that the email sink keeps the addresses to erase until SendGrid has taken them (then
#: they are removed). `error` is a fixed phrase or a status code, never a provider's text.
purges = sa.Table(
    "purges", metadata,
    sa.Column("case_id", sa.String(20), primary_key=True),
    sa.Column("sink", sa.String(20), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),      # pending, done
    sa.Column("removed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("error", sa.String(200), nullable=False, server_default=""),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("done_at", UTCDateTime),
)


def _columns_for(cls, *, skip=("record_id",)):
    cols = []
    for f in dc_fields(cls):
        if f.name in skip:
            continue
        t = str(f.type)
        # Server defaults let a migration add a NOT NULL column to a table that already has
        # rows (a field added to the model after the database was made).
        if "datetime" in t:
            cols.append(sa.Column(f.name, UTCDateTime))
        elif t == "bool":
            cols.append(sa.Column(f.name, sa.Boolean, nullable=False, default=False, server_default=sa.false()))
        elif t == "int":
            cols.append(sa.Column(f.name, sa.Integer, nullable=False, default=0, server_default="0"))
        else:
            cols.append(sa.Column(f.name, sa.Text, nullable=False, default="", server_default=""))
    return cols


cases = sa.Table("cases", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                 *_columns_for(Case),
                 sa.UniqueConstraint("case_id"), sa.UniqueConstraint("source_response_id"))
supporters = sa.Table("supporters", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                      *_columns_for(Supporter), sa.UniqueConstraint("name", "institution"))
reviewers = sa.Table("reviewers", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                     *_columns_for(Reviewer), sa.UniqueConstraint("name", "institution"))
resources = sa.Table("resources", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                     *_columns_for(Resource), sa.UniqueConstraint("name", "institution"))
events = sa.Table(
    "events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.String(20), nullable=False, index=True),
    sa.Column("event", sa.String(200), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
)

flyers = sa.Table("flyers", metadata, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                  *_columns_for(Flyer), sa.UniqueConstraint("tag"))

#: Scans of a flyer's QR code (`GET /f/<tag>`), per tag and day (the program's time zone):
#: a count only. No address, no cookie, no user agent, nothing about the person scanning.
flyer_scans = sa.Table(
    "flyer_scans", metadata,
    sa.Column("tag", sa.String(64), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False, server_default="0"),
)


#: How far the catch-up job (workflows/catchup.py) has read each form system: the start of
#: its last run that succeeded, by our clock. Nothing about any submission. The same table
#: keeps the marks of workflows/watch.py (how far the store-changes poll has read, the
#: Airtable webhook's health, when each clock last read the cases), under their own names.
catchup_cursors = sa.Table(
    "catchup_cursors", metadata,
    sa.Column("source", sa.String(40), primary_key=True),
    sa.Column("read_to", UTCDateTime, nullable=False),
)

# ---- staff accounts: the console's sign-in (web/console.py, staff.py) ----

#: Coordinators (their institutions' cases) and program leads (every case). `institutions` is
#: a space-separated list of program.toml codes; the password is a Werkzeug hash.
staff = sa.Table(
    "staff", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("institutions", sa.Text, nullable=False, server_default=""),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: One row per signed-in browser. The cookie holds the token; only its SHA-256 is stored, so
#: whoever reads the database cannot take over a session. Deleted at sign-out, idle expiry,
#: and when the account is disabled.
staff_sessions = sa.Table(
    "staff_sessions", metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("staff_id", sa.Integer, nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
)

#: Failed sign-ins per email address typed (its SHA-256, whether or not an account has it, so
#: the delay says nothing about which addresses exist).
staff_login_failures = sa.Table(
    "staff_login_failures", metadata,
    sa.Column("email_hash", sa.String(64), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("blocked_until", UTCDateTime),
    sa.Column("last_failure_at", UTCDateTime),
)


# ---- after the first contact: supporter check-ins and surveys (workflows/wellbeing.py, surveys.py) ----

#: One check-in SMS to a supporter after a case. `case_id` is kept only until the case is
#: purged (then emptied); month ("2026-12") is what the dashboard counts by.
checkins = sa.Table(
    "checkins", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("supporter_id", sa.String(40), nullable=False, index=True),
    sa.Column("case_id", sa.String(20), nullable=False, server_default=""),
    sa.Column("asked_at", UTCDateTime, nullable=False),
    sa.Column("answered_at", UTCDateTime),
    sa.Column("score", sa.Integer),
    sa.Column("month", sa.String(7), nullable=False),
    sa.UniqueConstraint("case_id", "supporter_id", name="uq_checkins_case_supporter"),
)

#: One survey link (the token names this id). Holds no case: only who is asked and the
#: de-identified fields their answers are stored with.
survey_invitations = sa.Table(
    "survey_invitations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("respondent", sa.String(10), nullable=False),
    sa.Column("institution", sa.String(40), nullable=False, server_default=""),
    sa.Column("role", sa.String(100), nullable=False, server_default=""),
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("answered_at", UTCDateTime),
)

#: Survey answers, without the case (or the invitation): who answered (requester or
#: supporter), institution, role, month, question id, answer.
survey_answers = sa.Table(
    "survey_answers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("respondent", sa.String(10), nullable=False),
    sa.Column("institution", sa.String(40), nullable=False, server_default=""),
    sa.Column("role", sa.String(100), nullable=False, server_default=""),
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("question_id", sa.String(40), nullable=False),
    sa.Column("answer", sa.String(200), nullable=False),
)
