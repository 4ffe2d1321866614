"""The inbox of received submissions (the truth, not the queue) and the Case ID register.

A submission is written here before the web answers 2xx; workers claim rows with a lease and
the sweep re-queues what the queue lost (docs/architecture.md section 1).
"""
from __future__ import annotations

import contextlib
import functools
import json
import secrets
import threading
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from workflows.records import InboxRow, from_row

from .group_commit import GroupCommit
from .schema import case_refs, inbox

_writers_lock = threading.Lock()


@contextlib.contextmanager
def transaction(engine: sa.Engine, *, durable: bool):
    """A transaction whose commit waits for the disk (durable) or not, whatever the engine's
    default. Durable: a 2xx promises the submission is on disk. Not: a figure whose loss in a
    power cut harms nothing (a rate-limit count). SQLite: synchronous FULL or NORMAL (set before
    BEGIN: SQLite does not apply it inside a transaction), restored afterwards; PostgreSQL:
    synchronous_commit on or off for this transaction."""
    with engine.connect() as conn:
        restore = None
        if conn.dialect.name == "sqlite":
            raw = conn.connection.driver_connection
            before = raw.execute("PRAGMA synchronous").fetchone()[0]
            wanted = 2 if durable else 1           # FULL; NORMAL (with WAL: no fsync at commit)
            if before != wanted:
                raw.execute(f"PRAGMA synchronous={wanted}")
                restore = f"PRAGMA synchronous={int(before)}"
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SET LOCAL synchronous_commit = {'on' if durable else 'off'}")
                yield conn
        finally:
            if restore:
                raw.execute(restore)


@functools.cache
def _insert_new_rows(dialect: str):
    """INSERT ... ON CONFLICT (source_key) DO NOTHING RETURNING id: None for a key already
    there. Built once, so SQLAlchemy compiles it once per process."""
    construct = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    return construct(inbox).on_conflict_do_nothing(index_elements=[inbox.c.source_key]).returning(inbox.c.id)


class InboxRepo:
    """Mixed into `Database`: needs `self.engine` and `self.clock`."""

    def record_submission(self, *, source: str, source_key: str, payload: dict,
                          on_new: Callable[[int], None] | None = None) -> tuple[int, bool]:
        """Store a received submission before we answer. Returns (inbox id, newly stored) once
        its transaction is on disk. Concurrent callers of this process share transactions
        (group_commit.py), so a burst does not queue behind one fsync each. `on_new(inbox id)`
        runs once a new row is on disk (not for a key already there), in the thread of the
        caller that wrote the transaction, perhaps just after this call has returned."""
        now = self.clock.now()
        row = {"source": source, "source_key": source_key, "received_at": now,
               "payload": json.dumps(payload, ensure_ascii=False), "status": "new", "attempts": 0,
               "last_error": "", "case_id": "", "updated_at": now}
        then = None
        if on_new is not None:
            def then(result):
                if result[1]:
                    on_new(result[0])
        return self._inbox_writer().submit(row, then)

    def _inbox_writer(self) -> GroupCommit:
        writer = self.__dict__.get("_inbox_group_commit")
        if writer is None:
            with _writers_lock:
                writer = self.__dict__.setdefault("_inbox_group_commit", GroupCommit(self._write_submissions))
        return writer

    def _write_submissions(self, take) -> list[tuple[int, bool]]:
        """One transaction, committed to disk, for the rows queued once it holds the write
        lock; a key already in the inbox (a sender's retry, or twice in this batch) keeps its
        first row and is not new."""
        insert = _insert_new_rows(self.engine.dialect.name)
        found = []
        with transaction(self.engine, durable=True) as conn:
            for row in take():
                row_id = conn.execute(insert, row).scalar()
                if row_id is not None:
                    found.append((int(row_id), True))
                else:
                    row_id = conn.execute(sa.select(inbox.c.id).where(inbox.c.source_key == row["source_key"])).scalar_one()
                    found.append((int(row_id), False))
        return found

    def inbox_row(self, inbox_id: int) -> InboxRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(inbox).where(inbox.c.id == inbox_id)).mappings().first()
        if row is None:
            return None
        return from_row(InboxRow, {**row, "payload": json.loads(row["payload"])})

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

    def list_inbox(self, statuses: tuple[str, ...] | None = None, limit: int = 200) -> list[InboxRow]:
        """Rows without their answers: for people and logs."""
        cols = [inbox.c.id, inbox.c.source, inbox.c.source_key, inbox.c.received_at, inbox.c.status,
                inbox.c.attempts, inbox.c.last_error, inbox.c.case_id, inbox.c.next_attempt_at]
        stmt = sa.select(*cols).order_by(inbox.c.id.desc()).limit(limit)
        if statuses:
            stmt = stmt.where(inbox.c.status.in_(statuses))
        with self.engine.connect() as conn:
            return [from_row(InboxRow, r) for r in conn.execute(stmt).mappings()]

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
