"""Where each statement of the database package runs: its own transaction, or one unit of work.

Outside a unit, every repo method is a transaction of its own, as it always was. Inside
`unit_of_work()`, every method this thread calls joins one transaction, committed once at the
end: the embedded worker turns a submission into its case, events, ledger rows and outbox
messages in one commit instead of dozens (issue 14), and a worker killed midway leaves nothing
half done. Inside a unit, a write whose caller catches an IntegrityError ("already there")
runs in a SAVEPOINT (`may_conflict`), so that failure leaves the rest of the unit intact on
PostgreSQL too.

Reads outside a unit open a plain (deferred) transaction: on SQLite they do not take the write
lock, so they never queue behind, or hold up, a writer.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager, nullcontext

import sqlalchemy as sa


class _WriteTurn:
    """One writer at a time per SQLite file: among this process's threads (a lock), then among
    processes (an advisory lock on `<database>-turn` beside the file). SQLite would keep them
    apart anyway, but its busy wait sleeps in growing steps (1, 2, 5 ... 100 ms): gunicorn's two
    workers and the huey worker asking it at once spend more time asleep than writing
    (bench/intake.py's p99). Here a waiter checks again every 2 ms at most. Re-entrant; every
    wait is bounded."""

    def __init__(self, path: str | None):
        self.lock, self.depth, self.fd = threading.RLock(), 0, None
        if path:
            try:
                self.fd = os.open(path + "-turn", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:     # a read-only or odd filesystem: SQLite's own locking still holds
                self.fd = None

    @contextmanager
    def held(self, seconds: float):
        deadline = time.monotonic() + seconds
        if not self.lock.acquire(timeout=seconds):
            raise sa.exc.TimeoutError(f"no turn to write within {seconds:g} s")
        try:
            self.depth += 1
            if self.depth == 1 and self.fd is not None:
                self._lock_file(deadline, seconds)
            try:
                yield
            finally:
                if self.depth == 1 and self.fd is not None:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.depth -= 1
            self.lock.release()

    def _lock_file(self, deadline: float, seconds: float) -> None:
        pause = 0.0001
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise sa.exc.TimeoutError(f"no turn to write within {seconds:g} s") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)


#: The write turn of each SQLite file, per process (a forked child opens its own lock file:
#: an inherited descriptor would share the parent's lock), by (URL, process id).
_turns: dict[tuple[str, int], _WriteTurn] = {}
_turns_lock = threading.Lock()


def write_turn(url: str) -> _WriteTurn:
    key = (url, os.getpid())
    with _turns_lock:
        turn = _turns.get(key)
        if turn is None:
            path = url.split("///", 1)[-1].split("?", 1)[0]
            turn = _turns[key] = _WriteTurn(None if path in ("", ":memory:") else path)
        return turn


@contextmanager
def transaction(engine: sa.Engine, *, durable: bool):
    """A transaction on `engine` whose commit waits for the disk (durable) or not, whatever the
    engine's default: a figure whose loss in a power cut harms nothing (a rate-limit count,
    web/ratelimit.py) need not. SQLite: synchronous FULL or NORMAL (set before BEGIN: SQLite does
    not apply it inside a transaction), restored afterwards; PostgreSQL: synchronous_commit on
    or off for this transaction."""
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


class Transactions:
    """Mixed into `Database`: needs `self.url`, `self.engine`, `self.durable_engine` and
    `self.wait_seconds`."""

    _units: threading.local

    def _unit(self) -> sa.Connection | None:
        return getattr(self._units, "conn", None)

    def in_unit_of_work(self) -> bool:
        """Whether this thread's database calls are joining one transaction now."""
        return self._unit() is not None

    @contextmanager
    def _writer(self):
        """On SQLite, writers take turns here (`_WriteTurn`) before asking SQLite. Bounded like
        every wait for the database (pool timeout)."""
        if not self.url.startswith("sqlite"):
            yield
            return
        with write_turn(self.url).held(self.wait_seconds):
            yield

    @contextmanager
    def unit_of_work(self):
        """One transaction for every database call of this thread inside the block (nested
        blocks join the outer one). Only for work whose every effect is in this database: an
        outside call made inside would wait on, or be undone by, the open transaction."""
        if self._unit() is not None:
            yield
            return
        with self._writer(), self.engine.begin() as conn:
            self._units.conn = conn
            try:
                yield
            finally:
                self._units.conn = None

    @contextmanager
    def _write(self, *, durable: bool = False, may_conflict: bool = False):
        """A connection in a transaction that commits at the end of the block; inside a unit,
        the unit's. `may_conflict`: the caller catches an IntegrityError ("already there"),
        so inside a unit the block runs in a savepoint, and its failure undoes only itself
        (PostgreSQL would otherwise refuse the rest of the unit). `durable`: outside a unit,
        the commit waits for the disk."""
        conn = self._unit()
        if conn is not None:
            with conn.begin_nested() if may_conflict else nullcontext():
                yield conn
            return
        with self._writer(), (self.durable_engine if durable else self.engine).begin() as conn:
            yield conn

    @contextmanager
    def _read(self):
        """A connection for reading (inside a unit: the unit's, which sees its own writes)."""
        conn = self._unit()
        if conn is not None:
            yield conn
            return
        with self.engine.connect().execution_options(peerline_readonly=True) as conn:
            yield conn
