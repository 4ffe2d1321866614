"""The service's own SQL database (SQLAlchemy Core; SQLite embedded, PostgreSQL in production).

It holds the inbox of received submissions (the truth, not the queue), the Case ID register,
per-case locks, the message ledger and outbox, staff accounts, and, when Airtable is not
configured, the case store itself (docs/architecture.md section 6 tables, snake_case columns).

Connect: leave DATABASE_URL unset for SQLite in DATA_DIR, or set
DATABASE_URL=postgresql://user:pass@host/db. The schema is migrated on first use.

One job per module: `engine` (engines, SQLite pragmas), `schema` (tables), `migrate` and
`migrations/` (Alembic), `inbox`, `ledger` (messages, opt-outs, webhook dedupe, outbox),
`offers` (offers, milestones, locks), `scans` (flyer scans per tag and day), `store` (SqlCaseStore), `staff` (StaffStore), `wellbeing`
(supporter check-ins, survey invitations and answers).
"""
from __future__ import annotations

import sqlalchemy as sa

from workflows.clock import Clock

from .engine import dispose_engines, engine_for
from .inbox import InboxRepo
from .ledger import LedgerRepo
from .offers import OffersRepo
from .purge import PurgeRepo
from .scans import ScansRepo
from .schema import (UTCDateTime, case_milestones, case_refs, cases, checkins, events, flyer_scans, flyers, inbox,
                     locks, messages, metadata, offers, opt_outs, outbox, purges, resources, reviewers, staff,
                     staff_login_failures, staff_sessions, supporters, survey_answers, survey_invitations,
                     webhook_events)
from .staff import StaffStore
from .store import SqlCaseStore
from .wellbeing import WellbeingRepo


class Database(InboxRepo, LedgerRepo, OffersRepo, PurgeRepo, ScansRepo, WellbeingRepo):
    """The inbox, Case ID register, locks, ledger, offers, outbox, purge state, flyer scans and
    check-ins and surveys, on one engine."""

    def __init__(self, url: str, clock: Clock | None = None):
        self.url = url
        self.engine = engine_for(url)
        #: The Context's clock (build_context passes it), so rows are stamped with the
        #: same "now" the workflows compare against.
        self.clock = clock or Clock()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True


__all__ = [
    "Database", "SqlCaseStore", "StaffStore", "UTCDateTime", "engine_for", "dispose_engines", "metadata",
    "inbox", "case_refs", "locks", "messages", "opt_outs", "webhook_events", "offers", "case_milestones",
    "outbox", "purges", "cases", "supporters", "reviewers", "resources", "events", "staff", "staff_sessions",
    "staff_login_failures", "checkins", "survey_invitations", "survey_answers", "flyers", "flyer_scans",
]
