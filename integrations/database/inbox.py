"""The inbox of received submissions (the truth, not the queue) and the Case ID register.

A submission is written here before the web answers 2xx; workers claim rows with a lease and
the sweep re-queues what the queue lost (docs/architecture.md section 1).
"""
from __future__ import annotations

import functools
import json
import threading
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from workflows.records import InboxRow, from_row

from .group_commit import GroupCommit
from .schema import case_numbers, case_refs, inbox

#: New Case IDs count up from here (`PS-10001`): above every Case ID drawn at random before
#: (`PS-1000` to `PS-9999`), so an old and a new one never meet.
CASE_NUMBER_BASE = 10000


_B = sa.bindparam
#: Built once (every submission runs them; building costs more than running on SQLite).
_CLAIM = (inbox.update()
          .where(inbox.c.id == _B("id_"))
          .where(sa.or_(inbox.c.status == "new",
                        sa.and_(inbox.c.status == "retry",
                                sa.or_(inbox.c.next_attempt_at.is_(None), inbox.c.next_attempt_at <= _B("now_"))),
                        sa.and_(inbox.c.status == "processing", inbox.c.lease_until < _B("now_"))))
          .values(status="processing", lease_until=_B("until_"), attempts=inbox.c.attempts + 1,
                  updated_at=_B("now_"))
          .returning(*inbox.c))

_FINISH = (inbox.update().where(inbox.c.id == _B("id_"))
           .values(status="done", case_id=_B("case_id_"), last_error="", lease_until=None, updated_at=_B("now_")))
_CASE_ID = sa.select(case_refs.c.case_id).where(case_refs.c.source_key == _B("source_key_"))
_NEW_CASE_NUMBER = case_numbers.insert()


@functools.cache
def _new_case_ref(dialect: str):
    """INSERT ... ON CONFLICT (source_key) DO NOTHING RETURNING source_key: nothing for a
    submission another worker gave its Case ID first."""
    construct = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    return (construct(case_refs).on_conflict_do_nothing(index_elements=[case_refs.c.source_key])
            .returning(case_refs.c.source_key))


_writers_lock = threading.Lock()


def _waits_for_disk(raw, cursor) -> bool:
    """Does this PostgreSQL connection's commit wait for the disk already (synchronous_commit
    is not off for its session)? Read once per connection and kept with it: our code changes
    it only with SET LOCAL, for one transaction; a database or role default set later applies
    to new connections, which read it again. Saves a round trip a submission."""
    known = raw.info.get("peerline_commit_waits")
    if known is None:
        cursor.execute("SELECT current_setting('synchronous_commit')")
        known = raw.info["peerline_commit_waits"] = cursor.fetchone()[0] != "off"
        raw.commit()
    return known


class _NewRowsInsert:
    """INSERT ... ON CONFLICT (source_key) DO NOTHING RETURNING id, run on the driver's own
    connection: None for a key already there. Every webhook and form post runs it, and going
    through SQLAlchemy's statement machinery cost more CPU than the insert itself
    (bench/intake.py). Values pass through each column type's own bind processor, so what is
    stored is what SQLAlchemy would have stored."""

    def __init__(self, dialect):
        self.dialect = dialect
        self.columns = [c for c in inbox.c if c.name != "id"]
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.insert = (f"INSERT INTO inbox ({', '.join(c.name for c in self.columns)}) "
                       f"VALUES ({', '.join(mark for _ in self.columns)}) "
                       "ON CONFLICT (source_key) DO NOTHING RETURNING id")
        self.existing = f"SELECT id FROM inbox WHERE source_key = {mark}"
        self.processors = [c.type.bind_processor(dialect) for c in self.columns]

    def params(self, row: dict) -> list:
        values = [row.get(c.name) for c in self.columns]
        return [p(v) if p is not None else v for p, v in zip(self.processors, values)]

    def run(self, raw, rows: list[dict]) -> list[tuple[int, bool]]:
        """One transaction on `raw` (a pooled DBAPI connection) for `rows`, committed."""
        cursor = raw.cursor()
        restore = None
        try:
            if self.dialect.name == "sqlite":
                # FULL whatever this connection was left at (set outside a transaction, as
                # SQLite wants), and restored afterwards: a 2xx promises the row is on disk.
                before = cursor.execute("PRAGMA synchronous").fetchone()[0]
                if before != 2:
                    cursor.execute("PRAGMA synchronous=2")
                    restore = f"PRAGMA synchronous={int(before)}"
                cursor.execute("BEGIN IMMEDIATE")     # the driver's autobegin is off (engine.py)
            elif not _waits_for_disk(raw, cursor):
                cursor.execute("SET LOCAL synchronous_commit = on")
            found = []
            for row in rows:
                cursor.execute(self.insert, self.params(row))
                got = cursor.fetchone()
                if got is None:
                    cursor.execute(self.existing, (row["source_key"],))
                    found.append((int(cursor.fetchone()[0]), False))
                else:
                    found.append((int(got[0]), True))
            raw.commit()
            return found
        except self.dialect.loaded_dbapi.Error as exc:
            raw.rollback()
            # As SQLAlchemy would raise it, so callers tell "out of reach" from a bug alike.
            raise sa.exc.DBAPIError.instance(None, None, exc, self.dialect.loaded_dbapi.Error,
                                             hide_parameters=True, dialect=self.dialect) from None
        except BaseException:
            raw.rollback()
            raise
        finally:
            if restore:
                cursor.execute(restore)
            cursor.close()


class InboxRepo:
    """Mixed into `Database`: needs its transactions (`_write`, `_read`) and `self.clock`."""

    def record_submission(self, *, source: str, source_key: str, payload: dict,
                          priority: str = "routine", on_new: Callable[[int], None] | None = None
                          ) -> tuple[int, bool]:
        """Store a received submission before we answer, in its queue lane (`priority`), marked
        queued now: `on_new` queues it (`mark_unqueued` if that fails). Returns (inbox id, newly stored) once
        its transaction is on disk. Concurrent callers of this process share transactions
        (group_commit.py), so a burst does not queue behind one fsync each. `on_new(inbox id)`
        runs once a new row is on disk (not for a key already there), in the thread of the
        caller that wrote the transaction, perhaps just after this call has returned."""
        now = self.clock.now()
        row = {"source": source, "source_key": source_key, "received_at": now,
               "payload": json.dumps(payload, ensure_ascii=False), "status": "new", "attempts": 0,
               "last_error": "", "case_id": "", "updated_at": now,
               "priority": priority, "queued_at": now}
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
        insert = self.__dict__.get("_new_rows_insert")
        if insert is None:
            insert = self.__dict__.setdefault("_new_rows_insert", _NewRowsInsert(self.durable_engine.dialect))
        with self._writer():
            raw = self.durable_engine.raw_connection()
            try:
                return insert.run(raw, take())
            finally:
                raw.close()        # back to the pool

    def inbox_row(self, inbox_id: int) -> InboxRow | None:
        with self._read() as conn:
            row = conn.execute(sa.select(inbox).where(inbox.c.id == inbox_id)).mappings().first()
        if row is None:
            return None
        return from_row(InboxRow, {**row, "payload": json.loads(row["payload"])})

    def claim_submission(self, inbox_id: int, lease_seconds: int) -> InboxRow | None:
        """Take a row for processing; only one worker wins, a dead worker's lease runs out, and
        a retry waits for its time (extra copies of the task in the queue are no-ops). Returns
        the row as claimed, or None when another worker has it, or it is finished or not due."""
        now = self.clock.now()
        params = {"id_": inbox_id, "now_": now, "until_": now + timedelta(seconds=lease_seconds)}
        with self._write() as conn:
            row = conn.execute(_CLAIM, params).mappings().first()
        return None if row is None else from_row(InboxRow, {**row, "payload": json.loads(row["payload"])})

    def finish_submission(self, inbox_id: int, case_id: str) -> None:
        with self._write() as conn:
            conn.execute(_FINISH, {"id_": inbox_id, "case_id_": case_id, "now_": self.clock.now()})

    def retry_submission(self, inbox_id: int, error: str, at: datetime) -> None:
        """Try again at `at`; the caller schedules the task for then (its queueing time)."""
        self._set_inbox(inbox_id, status="retry", last_error=error, next_attempt_at=at, lease_until=None,
                        queued_at=at)

    def release_submission(self, inbox_id: int, priority: str) -> None:
        """Hand a claimed row back, unfinished and without counting the attempt, to be queued
        now in the lane `priority` (a form notice read ahead of routine work, found routine)."""
        self._set_inbox(inbox_id, status="new", attempts=inbox.c.attempts - 1, lease_until=None,
                        priority=priority, queued_at=self.clock.now())

    def set_submission_priority(self, inbox_id: int, priority: str) -> None:
        """The row's queue lane from now on (its retries and sweeps)."""
        self._set_inbox(inbox_id, priority=priority)

    def mark_unqueued(self, inbox_id: int) -> None:
        """Queueing the row's task failed: the next sweep queues it, without waiting a lease."""
        self._set_inbox(inbox_id, queued_at=None)

    def park_submission(self, inbox_id: int, error: str) -> None:
        self._set_inbox(inbox_id, status="parked", last_error=error, lease_until=None)

    def reopen_submission(self, inbox_id: int) -> bool:
        """For `flask inbox replay`: run a row again from the start of its retries."""
        with self._write() as conn:
            return conn.execute(inbox.update().where(inbox.c.id == inbox_id).values(
                status="new", attempts=0, next_attempt_at=None, lease_until=None,
                updated_at=self.clock.now())).rowcount == 1

    def _set_inbox(self, inbox_id: int, **values) -> None:
        with self._write() as conn:
            conn.execute(inbox.update().where(inbox.c.id == inbox_id).values(updated_at=self.clock.now(), **values))

    def list_inbox(self, statuses: tuple[str, ...] | None = None, limit: int = 200) -> list[InboxRow]:
        """Rows without their answers: for people and logs."""
        cols = [inbox.c.id, inbox.c.source, inbox.c.source_key, inbox.c.received_at, inbox.c.status,
                inbox.c.attempts, inbox.c.last_error, inbox.c.case_id, inbox.c.next_attempt_at]
        stmt = sa.select(*cols).order_by(inbox.c.id.desc()).limit(limit)
        if statuses:
            stmt = stmt.where(inbox.c.status.in_(statuses))
        with self._read() as conn:
            return [from_row(InboxRow, r) for r in conn.execute(stmt).mappings()]

    @staticmethod
    def _lost(now: datetime, lease_seconds: int):
        """Unfinished rows (new, a retry that is due, or processing past a dead worker's lease)
        whose task is not known to be in the queue: never queued, or queued longer than the
        lease ago and still not claimed. A row queued within the lease is only waiting its turn."""
        unfinished = sa.or_(
            inbox.c.status == "new",
            sa.and_(inbox.c.status == "retry", inbox.c.next_attempt_at <= now),
            sa.and_(inbox.c.status == "processing", inbox.c.lease_until < now))
        not_queued = sa.or_(inbox.c.queued_at.is_(None),
                            inbox.c.queued_at <= now - timedelta(seconds=lease_seconds))
        return sa.and_(unfinished, not_queued)

    def submissions_to_requeue(self, now: datetime, grace_seconds: int = 30) -> list[int]:
        """Rows the queue may have lost (see `_lost`, with `grace_seconds` as the lease)."""
        stmt = sa.select(inbox.c.id).where(self._lost(now, grace_seconds)).order_by(inbox.c.id)
        with self._read() as conn:
            return [r[0] for r in conn.execute(stmt)]

    def take_submissions_to_requeue(self, now: datetime, lease_seconds: int) -> list[tuple[int, str]]:
        """The sweep's rows: [(inbox id, queue lane)] of rows the queue may have lost, each
        marked queued now in the same statement (so a sweep within the lease, on
        any worker, leaves them alone)."""
        stmt = (inbox.update().where(self._lost(now, lease_seconds)).values(queued_at=now)
                .returning(inbox.c.id, inbox.c.priority))
        with self._write() as conn:
            rows = [(r.id, r.priority) for r in conn.execute(stmt)]
        return sorted(rows)

    # ---- Case IDs ----
    def known_case_id(self, source_key: str) -> str | None:
        """The submission's Case ID if one was ever assigned, else None: then no case was
        ever made from it (intake assigns the Case ID before making the case)."""
        with self._read() as conn:
            return self._case_id(conn, source_key)

    def case_id_for(self, source_key: str, prefix: str, *, unseen: bool = False) -> str:
        """The Case ID for a submission: assigned once, the same on every retry or replay. A new
        one is `<prefix>-<CASE_NUMBER_BASE + the next case_numbers key>`: unique by the
        database however many cases there are, and short enough to type in an SMS. `unseen`:
        the caller has just found it has none (`known_case_id`), so it is not looked for again.
        Another worker that gave the submission its Case ID first wins: ours is not recorded
        (its number is left unused), and theirs is returned. No error on that path, so no
        savepoint inside a unit of work."""
        with self._write() as conn:
            found = None if unseen else self._case_id(conn, source_key)
            if found:
                return found
            number = conn.execute(_NEW_CASE_NUMBER, {"source_key": source_key}).inserted_primary_key[0]
            case_id = f"{prefix}-{CASE_NUMBER_BASE + int(number)}"
            if conn.execute(_new_case_ref(self.engine.dialect.name),
                            {"source_key": source_key, "case_id": case_id}).first() is not None:
                return case_id
            return self._case_id(conn, source_key)

    @staticmethod
    def _case_id(conn: sa.Connection, source_key: str) -> str | None:
        return conn.execute(_CASE_ID, {"source_key_": source_key}).scalar()
