"""The service's own SQL database (SQLAlchemy Core; SQLite embedded, PostgreSQL in production).

It holds the inbox of received submissions (the truth, not the queue), the Case ID register,
per-case locks, the message ledger and outbox, staff accounts, and, when Airtable is not
configured, the case store itself (docs/architecture.md section 6 tables, snake_case columns).

Connect: leave DATABASE_URL unset for SQLite in DATA_DIR, or set
DATABASE_URL=postgresql://user:pass@host/db. The schema is migrated on first use.

One job per module: `engine` (engines, SQLite pragmas), `transactions` (each call its own
transaction, or one unit of work), `schema` (tables), `migrate` and
`migrations/` (Alembic), `inbox`, `ledger` (messages, opt-outs, webhook dedupe, outbox),
`offers` (offers, milestones, locks), `scans` (flyer scans per tag and day), `store` (SqlCaseStore), `staff` (StaffStore), `wellbeing`
(supporter check-ins, survey invitations and answers).
"""
from __future__ import annotations

import threading

import sqlalchemy as sa

from workflows.clock import Clock

from .cursors import CursorsRepo
from .engine import WEB_WAIT_SECONDS, dispose_engines, engine_for
from .engine import ping as ping_url
from .inbox import InboxRepo
from .ledger import LedgerRepo
from .offers import OffersRepo
from .purge import PurgeRepo
from .scans import ScansRepo
from .schema import (UTCDateTime, case_milestones, case_numbers, case_refs, cases, catchup_cursors, checkins, events, flyer_scans,
                     flyers, inbox, locks, messages, metadata, offers, opt_outs, outbox, purges, resources, reviewers, staff,
                     staff_login_failures, staff_sessions, supporters, survey_answers, survey_invitations,
                     webhook_events)
from .staff import StaffStore
from .store import SqlCaseStore
from .transactions import Transactions, transaction
from .wellbeing import WellbeingRepo


class Database(Transactions, InboxRepo, LedgerRepo, OffersRepo, PurgeRepo, ScansRepo, WellbeingRepo, CursorsRepo):
    """The inbox, Case ID register, locks, ledger, offers, outbox, purge state, flyer scans and
    check-ins and surveys, and the catch-up's cursors, on one engine."""

    def __init__(self, url: str, clock: Clock | None = None, *, wait_seconds: float = WEB_WAIT_SECONDS):
        self.url, self.wait_seconds = url, float(wait_seconds)
        #: Every wait for the database is bounded by `wait_seconds` (engine.py).
        self.engine = engine_for(url, wait_seconds)
        #: The same database, for the commits that must be on disk before we go on (SQLite
        #: synchronous=FULL; on PostgreSQL the same engine): engine.py.
        self.durable_engine = engine_for(url, wait_seconds, durable=True)
        self._units = threading.local()
        #: The Context's clock (build_context passes it), so rows are stamped with the
        #: same "now" the workflows compare against.
        self.clock = clock or Clock()

    def figures(self) -> dict:
        """Counts for /metrics (no payload, no person): inbox rows by status, the oldest
        unfinished submission's received_at, and ledger messages by (channel, status)."""
        with self._read() as conn:
            by_status = dict(conn.execute(sa.select(inbox.c.status, sa.func.count())
                                          .group_by(inbox.c.status)).all())
            unfinished = inbox.c.status.notin_(("done", "parked"))
            oldest = conn.execute(sa.select(sa.func.min(inbox.c.received_at)).where(unfinished)).scalar()
            ledger = conn.execute(sa.select(messages.c.channel, messages.c.status, sa.func.count())
                                  .group_by(messages.c.channel, messages.c.status)).all()
        return {"inbox": by_status, "oldest_unfinished": oldest,
                "messages": {(channel, status): n for channel, status, n in ledger}}

    def ping(self) -> bool:
        """A read-only check, answered within about 2 s (engine.ping); raises when out of reach."""
        ping_url(self.url)
        return True


__all__ = [
    "Database", "SqlCaseStore", "StaffStore", "UTCDateTime", "engine_for", "dispose_engines", "metadata",
    "inbox", "case_refs", "case_numbers", "locks", "messages", "opt_outs", "webhook_events", "offers", "case_milestones",
    "outbox", "purges", "cases", "supporters", "reviewers", "resources", "events", "staff", "staff_sessions",
    "staff_login_failures", "checkins", "survey_invitations", "survey_answers", "flyers", "flyer_scans",
    "catchup_cursors", "transaction",
]
