"""The service's own SQL database (SQLAlchemy Core; SQLite embedded, PostgreSQL in production).

It holds the inbox of received submissions (the truth, not the queue), the Case ID register,
per-case locks, the message ledger and outbox, and, when Airtable is not configured, the case
store itself (docs/architecture.md section 6 tables, with snake_case column names).

Connect: leave DATABASE_URL unset for SQLite in DATA_DIR, or set
DATABASE_URL=postgresql://user:pass@host/db. Tables are created on first use.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import fields as dc_fields
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError

from workflows.clock import Clock
from workflows.model import Case, Event, MessageRecord, Resource, Reviewer, Roster, Supporter


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
)

case_refs = sa.Table(
    "case_refs", metadata,
    sa.Column("source_key", sa.String(200), primary_key=True),
    sa.Column("case_id", sa.String(20), nullable=False, unique=True),
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
#: (a coordinator changed the case meanwhile).
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


def _columns_for(cls, *, skip=("record_id",)):
    cols = []
    for f in dc_fields(cls):
        if f.name in skip:
            continue
        t = str(f.type)
        # Server defaults let `_add_missing_columns` add a NOT NULL column to a table that
        # already has rows (a field added to the model after the database was made).
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

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> sa.Engine:
    """One engine per URL per process; tables created on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _make_engine(url)
            _create_schema(engine)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


#: Any fixed number: the PostgreSQL advisory lock that lets one process at a time set up tables.
_SCHEMA_LOCK_KEY = 7_341_120


def _create_schema(engine: sa.Engine) -> None:
    """Create missing tables and columns. Several processes starting at once on a fresh
    PostgreSQL database (two gunicorn workers and the worker) would race on CREATE TABLE and
    one would fail to boot, so they take turns under an advisory lock. (SQLite's BEGIN
    IMMEDIATE serialises them already.)"""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_lock(_SCHEMA_LOCK_KEY)))
            try:
                metadata.create_all(engine)
                _add_missing_columns(engine)
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(_SCHEMA_LOCK_KEY)))
                conn.commit()
        return
    metadata.create_all(engine)
    _add_missing_columns(engine)


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added to a table after a database was created (create_all makes only new
    tables). New columns are nullable or have a server default, so this is safe to run."""
    inspector = sa.inspect(engine)
    existing_tables = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = sa.schema.CreateColumn(column).compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            except sa.exc.DBAPIError:
                pass  # another process added it first


def _make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # hide_parameters: a database error's message must not quote a request's answers.
        engine = sa.create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a 2xx means the submission is on disk
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            # Take the write lock at BEGIN, so read-then-write transactions cannot deadlock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        # Let SQLAlchemy's "begin" event issue BEGIN itself.
        @sa_event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Database:
    """The inbox, Case ID register, locks, ledger and outbox."""

    def __init__(self, url: str, clock: Clock | None = None):
        self.url = url
        self.engine = engine_for(url)
        #: The Context's clock (build_context passes it), so rows are stamped with the
        #: same "now" the workflows compare against.
        self.clock = clock or Clock()

    # ---- health ----
    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True

    # ---- inbox ----
    def record_submission(self, *, source: str, source_key: str, payload: dict) -> tuple[int, bool]:
        """Store a received submission before we answer. Returns (inbox id, newly stored)."""
        now = self.clock.now()
        try:
            with self.engine.begin() as conn:
                row_id = conn.execute(inbox.insert().values(
                    source=source, source_key=source_key, received_at=now,
                    payload=json.dumps(payload, ensure_ascii=False), status="new", attempts=0,
                    last_error="", case_id="", updated_at=now)).inserted_primary_key[0]
            return int(row_id), True
        except IntegrityError:
            with self.engine.connect() as conn:
                row_id = conn.execute(sa.select(inbox.c.id).where(inbox.c.source_key == source_key)).scalar_one()
            return int(row_id), False

    def inbox_row(self, inbox_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(inbox).where(inbox.c.id == inbox_id)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["payload"] = json.loads(out["payload"])
        return out

    def claim_submission(self, inbox_id: int, lease_seconds: int) -> bool:
        """Take a row for processing; only one worker wins, a dead worker's lease runs out, and
        a retry waits for its time (extra copies of the task in the queue are no-ops)."""
        now = self.clock.now()
        stmt = (inbox.update()
                .where(inbox.c.id == inbox_id)
                .where(sa.or_(inbox.c.status == "new",
                              sa.and_(inbox.c.status == "retry",
                                      sa.or_(inbox.c.next_attempt_at.is_(None), inbox.c.next_attempt_at <= now)),
                              sa.and_(inbox.c.status == "processing", inbox.c.lease_until < now)))
                .values(status="processing", lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=inbox.c.attempts + 1, updated_at=now))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def finish_submission(self, inbox_id: int, case_id: str) -> None:
        self._set_inbox(inbox_id, status="done", case_id=case_id, last_error="", lease_until=None)

    def retry_submission(self, inbox_id: int, error: str, at: datetime) -> None:
        self._set_inbox(inbox_id, status="retry", last_error=error, next_attempt_at=at, lease_until=None)

    def park_submission(self, inbox_id: int, error: str) -> None:
        self._set_inbox(inbox_id, status="parked", last_error=error, lease_until=None)

    def reopen_submission(self, inbox_id: int) -> bool:
        """For `flask inbox replay`: run a row again from the start of its retries."""
        with self.engine.begin() as conn:
            return conn.execute(inbox.update().where(inbox.c.id == inbox_id).values(
                status="new", attempts=0, next_attempt_at=None, lease_until=None,
                updated_at=self.clock.now())).rowcount == 1

    def _set_inbox(self, inbox_id: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(inbox.update().where(inbox.c.id == inbox_id).values(updated_at=self.clock.now(), **values))

    def list_inbox(self, statuses: tuple[str, ...] | None = None, limit: int = 200) -> list[dict]:
        """Rows without their answers: for people and logs."""
        cols = [inbox.c.id, inbox.c.source, inbox.c.source_key, inbox.c.received_at, inbox.c.status,
                inbox.c.attempts, inbox.c.last_error, inbox.c.case_id, inbox.c.next_attempt_at]
        stmt = sa.select(*cols).order_by(inbox.c.id.desc()).limit(limit)
        if statuses:
            stmt = stmt.where(inbox.c.status.in_(statuses))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def submissions_to_requeue(self, now: datetime, grace_seconds: int = 30) -> list[int]:
        """Rows the queue may have lost: new ones never picked up, retries that are due,
        and processing rows whose worker's lease ran out."""
        stmt = sa.select(inbox.c.id).where(sa.or_(
            sa.and_(inbox.c.status == "new", inbox.c.received_at < now - timedelta(seconds=grace_seconds)),
            sa.and_(inbox.c.status == "retry", inbox.c.next_attempt_at <= now),
            sa.and_(inbox.c.status == "processing", inbox.c.lease_until < now),
        )).order_by(inbox.c.id)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]

    # ---- Case IDs ----
    def case_id_for(self, source_key: str, prefix: str) -> str:
        """The Case ID for a submission: assigned once, the same on every retry or replay."""
        while True:
            with self.engine.connect() as conn:
                found = conn.execute(sa.select(case_refs.c.case_id)
                                     .where(case_refs.c.source_key == source_key)).scalar()
            if found:
                return found
            candidate = f"{prefix}-{secrets.randbelow(9000) + 1000}"
            try:
                with self.engine.begin() as conn:
                    conn.execute(case_refs.insert().values(source_key=source_key, case_id=candidate))
                return candidate
            except IntegrityError:
                continue  # taken by another case, or this key raced us: look again

    # ---- locks ----
    @contextmanager
    def lock(self, name: str, *, ttl_seconds: int = 120, wait_seconds: float = 60):
        """A lock shared by every process on this database; a holder that dies frees it at ttl."""
        owner, deadline = _owner(), time.monotonic() + wait_seconds
        while True:
            now = self.clock.now()
            try:
                with self.engine.begin() as conn:
                    conn.execute(locks.delete().where(locks.c.name == name).where(locks.c.expires_at < now))
                    conn.execute(locks.insert().values(name=name, owner=owner,
                                                       expires_at=now + timedelta(seconds=ttl_seconds)))
                break
            except IntegrityError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"lock {name!r} is held by another worker")
                time.sleep(0.05)
        try:
            yield
        finally:
            with self.engine.begin() as conn:
                conn.execute(locks.delete().where(locks.c.name == name).where(locks.c.owner == owner))

    # ---- message ledger ----
    def ledger_get(self, key: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(messages).where(messages.c.key == key)).mappings().first()
        return dict(row) if row else None

    def ledger_intend(self, record: MessageRecord, recipient: str, *, template: str = "",
                      values: dict | None = None, crisis: bool = False, now: datetime | None = None) -> None:
        """Record the intent to send before any provider call (no-op when already there)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(messages.insert().values(
                    key=record.key, case_id=record.case_id, kind=record.kind, channel=record.channel,
                    recipient_role=record.recipient_role, recipient=recipient, status="pending",
                    provider_id="", error="", created_at=now or self.clock.now(), template=template,
                    values_json=json.dumps(values or {}, ensure_ascii=False, default=str), crisis=crisis,
                    attempts=0, body_digest="", alerted=False, mirror_due=False))
        except IntegrityError:
            pass

    def ledger_claim(self, key: str, claim_seconds: int = 120, now: datetime | None = None) -> bool:
        """Only one worker may send a message; a crashed sender's claim runs out. Held and
        retrying messages can be claimed once they are due. Counts the attempt."""
        now = now or self.clock.now()
        stmt = (messages.update().where(messages.c.key == key)
                .where(sa.or_(
                    sa.and_(messages.c.status.in_(("pending", "held", "retry")),
                            sa.or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= now)),
                    sa.and_(messages.c.status == "sending",
                            sa.or_(messages.c.claimed_until.is_(None), messages.c.claimed_until < now))))
                .values(status="sending", claimed_until=now + timedelta(seconds=claim_seconds),
                        attempts=messages.c.attempts + 1))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def ledger_hold(self, key: str, until: datetime) -> bool:
        """Keep an unsent message until `until` (quiet hours)."""
        stmt = (messages.update().where(messages.c.key == key)
                .where(messages.c.status.in_(("pending", "retry", "held")))
                .values(status="held", next_attempt_at=until, claimed_until=None))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def ledger_advance(self, key: str, status: str, allowed_from, **values) -> bool:
        """Move a message to `status` only from one of `allowed_from` (so a late or repeated
        delivery report never moves it backwards). Returns whether it moved."""
        stmt = (messages.update().where(messages.c.key == key)
                .where(messages.c.status.in_(tuple(allowed_from))).values(status=status, **values))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def ledger_due(self, now: datetime, *, stale_seconds: int = 60, limit: int = 500) -> list[str]:
        """Messages the periodic task must (re)try: held or retrying ones that are due, intents
        never claimed (a worker died between intent and claim), and claims that ran out."""
        stmt = sa.select(messages.c.key).where(sa.or_(
            sa.and_(messages.c.status.in_(("held", "retry")), messages.c.next_attempt_at <= now),
            sa.and_(messages.c.status == "pending", messages.c.created_at < now - timedelta(seconds=stale_seconds)),
            sa.and_(messages.c.status == "sending",
                    sa.or_(messages.c.claimed_until.is_(None), messages.c.claimed_until < now)),
        )).order_by(messages.c.crisis.desc(), messages.c.created_at).limit(limit)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]

    def ledger_by_provider_id(self, provider_id: str) -> dict | None:
        if not provider_id:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(messages).where(messages.c.provider_id == provider_id)).mappings().first()
        return dict(row) if row else None

    def ledger_not_alerted(self, statuses, limit: int = 200) -> list[dict]:
        """Messages that ended in one of `statuses` and whose failure nobody was told of yet."""
        stmt = (sa.select(messages).where(messages.c.status.in_(tuple(statuses)))
                .where(messages.c.alerted == sa.false()).order_by(messages.c.created_at).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def ledger_mirror_due(self, limit: int = 200) -> list[str]:
        stmt = sa.select(messages.c.key).where(messages.c.mirror_due == sa.true()).limit(limit)
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]

    # ---- opt-outs ----
    def opt_out(self, channel: str, address: str, source: str, now: datetime | None = None) -> bool:
        """Record that `address` asked to stop on `channel`. Returns whether it is new."""
        try:
            with self.engine.begin() as conn:
                conn.execute(opt_outs.insert().values(channel=channel, address=address, source=source,
                                                      at=now or self.clock.now()))
            return True
        except IntegrityError:
            return False

    def opt_in(self, channel: str, address: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(opt_outs.delete().where(opt_outs.c.channel == channel)
                                .where(opt_outs.c.address == address)).rowcount > 0

    def is_opted_out(self, channel: str, address: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(opt_outs.c.address).where(opt_outs.c.channel == channel)
                                .where(opt_outs.c.address == address)).first() is not None

    # ---- provider webhook dedupe ----
    def remember_webhook_event(self, source: str, event_id: str, now: datetime | None = None) -> bool:
        """True the first time (source, event_id) is seen, False for a repeat delivery."""
        try:
            with self.engine.begin() as conn:
                conn.execute(webhook_events.insert().values(source=source, event_id=event_id,
                                                            received_at=now or self.clock.now()))
            return True
        except IntegrityError:
            return False

    def forget_webhook_event(self, source: str, event_id: str) -> None:
        """Undo `remember_webhook_event` when applying the event failed, so a redelivery is applied."""
        with self.engine.begin() as conn:
            conn.execute(webhook_events.delete().where(webhook_events.c.source == source)
                         .where(webhook_events.c.event_id == event_id))

    def forget_webhook_events(self, before: datetime) -> int:
        with self.engine.begin() as conn:
            return conn.execute(webhook_events.delete().where(webhook_events.c.received_at < before)).rowcount

    def ledger_update(self, key: str, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(messages.update().where(messages.c.key == key).values(**values))

    def ledger_rows(self, case_id: str | None = None) -> list[dict]:
        stmt = sa.select(messages).order_by(messages.c.created_at)
        if case_id:
            stmt = stmt.where(messages.c.case_id == case_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    # ---- offers ----
    def offer_create(self, *, case_id: str, supporter_id: str, offered_at: datetime,
                     expires_at: datetime) -> dict:
        """A new open offer, numbered after the case's earlier ones. Callers hold the case's
        offer lock; the unique (case, round) keeps two offers from sharing a number anyway."""
        with self.engine.begin() as conn:
            last = conn.execute(sa.select(sa.func.max(offers.c.round))
                                .where(offers.c.case_id == case_id)).scalar() or 0
            offer_id = conn.execute(offers.insert().values(
                case_id=case_id, round=last + 1, supporter_id=supporter_id, status="open",
                offered_at=offered_at, expires_at=expires_at)).inserted_primary_key[0]
        return self.offer_get(int(offer_id))

    def offer_get(self, offer_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(offers).where(offers.c.id == offer_id)).mappings().first()
        return dict(row) if row else None

    def offers_for_case(self, case_id: str) -> list[dict]:
        """Every offer of the case, first to last."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(offers).where(offers.c.case_id == case_id)
                                                  .order_by(offers.c.round)).mappings()]

    def offers_open_for(self, supporter_id: str, now: datetime) -> list[dict]:
        """The supporter's offers that are open and not past their expiry."""
        stmt = (sa.select(offers).where(offers.c.supporter_id == supporter_id)
                .where(offers.c.status == "open").where(offers.c.expires_at > now).order_by(offers.c.id))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def offers_expired(self, now: datetime, limit: int = 200) -> list[dict]:
        """Open offers whose time is up (the periodic task moves each case on)."""
        stmt = (sa.select(offers).where(offers.c.status == "open").where(offers.c.expires_at <= now)
                .order_by(offers.c.expires_at).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def offer_close(self, offer_id: int, status: str, at: datetime) -> bool:
        """Move an open offer to `status`; False when it was no longer open (someone else
        answered it first), so only one answer ever wins."""
        stmt = (offers.update().where(offers.c.id == offer_id).where(offers.c.status == "open")
                .values(status=status, answered_at=at))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def offer_update(self, offer_id: int, **values) -> None:
        with self.engine.begin() as conn:
            conn.execute(offers.update().where(offers.c.id == offer_id).values(**values))

    # ---- case milestones ----
    def milestone_done(self, case_id: str, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(case_milestones.c.at).where(case_milestones.c.case_id == case_id)
                                .where(case_milestones.c.name == name)).first() is not None

    def milestone_mark(self, case_id: str, name: str, at: datetime) -> bool:
        """Record that a once-only step is done. Returns whether it is new."""
        try:
            with self.engine.begin() as conn:
                conn.execute(case_milestones.insert().values(case_id=case_id, name=name, at=at))
            return True
        except IntegrityError:
            return False

    # ---- outbox (the embedded SMS and email provider) ----
    def outbox_add(self, *, message_key: str, channel: str, recipient: str, case_id: str,
                   subject: str, body: str) -> int:
        """Idempotent on the ledger key: a second attempt returns the first row's id."""
        try:
            with self.engine.begin() as conn:
                return int(conn.execute(outbox.insert().values(
                    message_key=message_key, at=self.clock.now(), channel=channel, recipient=recipient,
                    case_id=case_id, subject=subject, body=body)).inserted_primary_key[0])
        except IntegrityError:
            return self.outbox_id(message_key)

    def outbox_id(self, message_key: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(outbox.c.id).where(outbox.c.message_key == message_key)).scalar()

    def outbox_list(self, limit: int = 500) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(outbox).order_by(outbox.c.id).limit(limit)).mappings()]

    def outbox_recent(self, limit: int = 50, case_id: str | None = None) -> list[dict]:
        """The newest messages first (what `flask outbox` shows), optionally of one case."""
        stmt = sa.select(outbox).order_by(outbox.c.id.desc()).limit(limit)
        if case_id:
            stmt = stmt.where(outbox.c.case_id == case_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]


def _row_to(cls, row) -> object:
    names = {f.name for f in dc_fields(cls)}
    values = {k: v for k, v in dict(row).items() if k in names}
    values["record_id"] = str(row["id"])
    return cls(**values)


def _values_of(obj, table: sa.Table) -> dict:
    return {c.name: getattr(obj, c.name) for c in table.columns if c.name != "id"}


class SqlCaseStore:
    """The case store on the service's own database (the embedded default)."""

    def __init__(self, db: Database):
        self.engine = db.engine

    def find_case(self, *, case_id=None, source_response_id=None) -> Case | None:
        stmt = sa.select(cases)
        if case_id is not None:
            stmt = stmt.where(cases.c.case_id == case_id)
        elif source_response_id is not None:
            stmt = stmt.where(cases.c.source_response_id == source_response_id)
        else:
            raise ValueError("find_case needs case_id or source_response_id")
        with self.engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        return _row_to(Case, row) if row else None

    def create_case(self, case: Case) -> Case:
        try:
            with self.engine.begin() as conn:
                conn.execute(cases.insert().values(**_values_of(case, cases)))
        except IntegrityError:
            pass  # the same submission again: keep what is there
        return self.find_case(source_response_id=case.source_response_id)

    def update_case(self, case_id: str, **changes) -> Case:
        with self.engine.begin() as conn:
            if conn.execute(cases.update().where(cases.c.case_id == case_id).values(**changes)).rowcount != 1:
                raise KeyError(f"no case {case_id}")
        return self.find_case(case_id=case_id)

    def list_cases(self, status=None) -> list[Case]:
        stmt = sa.select(cases).order_by(cases.c.submitted_at)
        if status:
            stmt = stmt.where(cases.c.status == status)
        with self.engine.connect() as conn:
            return [_row_to(Case, r) for r in conn.execute(stmt).mappings()]

    def add_events(self, new_events: list[Event]) -> None:
        if new_events:
            with self.engine.begin() as conn:
                conn.execute(events.insert(), [
                    {"case_id": e.case_id, "event": e.event, "at": e.at, "actor": e.actor} for e in new_events])

    def list_events(self, case_id: str) -> list[Event]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(events).where(events.c.case_id == case_id).order_by(events.c.id)).mappings()
            return [Event(case_id=r["case_id"], event=r["event"], at=r["at"], actor=r["actor"]) for r in rows]

    def _all(self, table, cls):
        with self.engine.connect() as conn:
            return [_row_to(cls, r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]

    def supporters(self) -> list[Supporter]:
        return self._all(supporters, Supporter)

    def reviewers(self) -> list[Reviewer]:
        return self._all(reviewers, Reviewer)

    def resources(self) -> list[Resource]:
        return self._all(resources, Resource)

    def update_supporter(self, record_id: str, **changes) -> Supporter:
        unknown = set(changes) - {c.name for c in supporters.columns}
        if unknown or not str(record_id).isdigit():
            raise (TypeError(f"update_supporter() got unknown fields {sorted(unknown)}") if unknown
                   else KeyError(f"no supporter {record_id}"))
        with self.engine.begin() as conn:
            if conn.execute(supporters.update().where(supporters.c.id == int(record_id))
                            .values(**changes)).rowcount != 1:
                raise KeyError(f"no supporter {record_id}")
            row = conn.execute(sa.select(supporters).where(supporters.c.id == int(record_id))).mappings().one()
        return _row_to(Supporter, row)

    def import_roster(self, roster: Roster) -> dict:
        counts = {}
        with self.engine.begin() as conn:
            for table, items, label in ((supporters, roster.supporters, "supporters"),
                                        (reviewers, roster.reviewers, "reviewers"),
                                        (resources, roster.resources, "resources")):
                for item in items:
                    values = _values_of(item, table)
                    updated = conn.execute(table.update().where(table.c.name == item.name)
                                           .where(table.c.institution == item.institution).values(**values)).rowcount
                    if not updated:
                        conn.execute(table.insert().values(**values))
                counts[label] = len(items)
        return counts

    def roster_is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return not conn.execute(sa.select(sa.func.count()).select_from(supporters)).scalar() \
                and not conn.execute(sa.select(sa.func.count()).select_from(reviewers)).scalar()

    def mirror_messages(self, records: list[MessageRecord]) -> None:
        """The ledger is already in this database: nothing to mirror."""


# ============================================================================ staff accounts
# The console's sign-in (web/console.py): staff accounts, their server-side sessions, and the
# growing delay after failed sign-ins. Kept together here, apart from the case store, so the
# module can be restructured without touching the console. The tables sit in `metadata`, so
# `engine_for` creates them, and `_add_missing_columns` adds columns added here later.

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


def _sha256(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StaffStore:
    """Staff accounts, sessions and sign-in delays in the service's own database."""

    def __init__(self, db: Database):
        self.engine = db.engine

    # ---- accounts ----
    def add(self, *, email: str, name: str, role: str, institutions: list[str], password_hash: str,
            now: datetime) -> dict:
        """A new account. Raises ValueError when the email already has one."""
        try:
            with self.engine.begin() as conn:
                conn.execute(staff.insert().values(
                    email=email.strip().lower(), name=name, role=role, institutions=" ".join(institutions),
                    password_hash=password_hash, disabled=False, created_at=now))
        except IntegrityError:
            raise ValueError(f"an account with the email {email.strip().lower()} already exists") from None
        return self.by_email(email)

    def get(self, staff_id: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(staff).where(staff.c.id == staff_id)).mappings().first()
        return dict(row) if row else None

    def by_email(self, email: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(staff).where(staff.c.email == email.strip().lower())).mappings().first()
        return dict(row) if row else None

    def all(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(staff).order_by(staff.c.email)).mappings()]

    def disable(self, email: str) -> bool:
        """Disable an account and end its sessions. False when there is no such account."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(staff.c.id).where(staff.c.email == email.strip().lower())).first()
            if row is None:
                return False
            conn.execute(staff.update().where(staff.c.id == row[0]).values(disabled=True))
            conn.execute(staff_sessions.delete().where(staff_sessions.c.staff_id == row[0]))
        return True

    # ---- sessions ----
    def start_session(self, staff_id: int, now: datetime) -> str:
        """A new session for a signed-in account; returns the token for the (signed) cookie."""
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(staff_sessions.insert().values(token_hash=_sha256(token), staff_id=staff_id,
                                                        created_at=now, last_seen=now))
        return token

    def session_account(self, token: str, now: datetime, idle: timedelta) -> dict | None:
        """The account of a live session, which counts as activity; None (and the session
        ended) when it was idle longer than `idle`, or the account is disabled."""
        digest = _sha256(token)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(staff_sessions).where(staff_sessions.c.token_hash == digest)).mappings().first()
            if row is None:
                return None
            account = conn.execute(sa.select(staff).where(staff.c.id == row["staff_id"])).mappings().first()
            if account is None or account["disabled"] or row["last_seen"] + idle < now:
                conn.execute(staff_sessions.delete().where(staff_sessions.c.token_hash == digest))
                return None
            conn.execute(staff_sessions.update().where(staff_sessions.c.token_hash == digest).values(last_seen=now))
        return dict(account)

    def end_session(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(staff_sessions.delete().where(staff_sessions.c.token_hash == _sha256(token)))

    # ---- sign-in delays ----
    def blocked_until(self, email: str, now: datetime) -> datetime | None:
        with self.engine.connect() as conn:
            until = conn.execute(sa.select(staff_login_failures.c.blocked_until)
                                 .where(staff_login_failures.c.email_hash == _sha256(email.strip().lower()))).scalar()
        return until if until is not None and until > now else None

    def record_failure(self, email: str, now: datetime, *, cap: timedelta,
                       forget_after: timedelta = timedelta(hours=24)) -> datetime:
        """One more failed sign-in: the address waits 2^n seconds after n failures (at most
        `cap`); failures older than `forget_after` are forgotten. Returns until when."""
        digest = _sha256(email.strip().lower())
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(staff_login_failures)
                               .where(staff_login_failures.c.email_hash == digest)).mappings().first()
            failures = 1
            if row is not None and row["last_failure_at"] and row["last_failure_at"] + forget_after > now:
                failures = row["failures"] + 1
            until = now + min(timedelta(seconds=2 ** min(failures, 20)), cap)
            values = dict(failures=failures, blocked_until=until, last_failure_at=now)
            if row is None:
                conn.execute(staff_login_failures.insert().values(email_hash=digest, **values))
            else:
                conn.execute(staff_login_failures.update()
                             .where(staff_login_failures.c.email_hash == digest).values(**values))
        return until

    def clear_failures(self, email: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(staff_login_failures.delete()
                         .where(staff_login_failures.c.email_hash == _sha256(email.strip().lower())))
