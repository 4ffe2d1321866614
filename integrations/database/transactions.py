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

import threading
from contextlib import contextmanager, nullcontext

import sqlalchemy as sa


#: One writer at a time per SQLite file in this process (see `_writer`), by URL.
_writers: dict[str, threading.RLock] = {}
_writers_lock = threading.Lock()


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
        """On SQLite, this process's threads take turns to write here, in Python, before
        asking SQLite: SQLite has one writer, and its busy wait sleeps in growing steps (up to
        100 ms) and lets a thread starve, so four worker threads asking it at once spend more
        time asleep than writing. Bounded like every wait for the database (pool timeout)."""
        if not self.url.startswith("sqlite"):
            yield
            return
        with _writers_lock:
            lock = _writers.setdefault(self.url, threading.RLock())
        if not lock.acquire(timeout=self.wait_seconds):
            raise sa.exc.TimeoutError(f"no turn to write within {self.wait_seconds:g} s")
        try:
            yield
        finally:
            lock.release()

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
