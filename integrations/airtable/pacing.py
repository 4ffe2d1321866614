"""Request pacing for an Airtable base, shared by every thread and, through the service's own
database, by every process: Airtable allows 5 requests a second per base and refuses
everything for 30 s after a 429."""
from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

#: Airtable's documented limit, per base, for every API (records and metadata).
REQUESTS_PER_SECOND = 5
#: Spacing between our requests: the limit's interval plus 10 %, so that network jitter cannot
#: bunch six of our requests into one of Airtable's seconds.
REQUEST_INTERVAL = 1.1 / REQUESTS_PER_SECOND
#: After a 429 Airtable refuses every request to the base for 30 s.
RATE_LIMIT_WAIT_SECONDS = 30.0


_throttle_metadata = sa.MetaData()
throttle_slots = sa.Table(
    "airtable_throttle", _throttle_metadata,
    sa.Column("base_id", sa.String(40), primary_key=True),
    sa.Column("next_at", sa.Float, nullable=False),     # Unix time of the next free slot
)


class Throttle:
    """Hands out request slots REQUEST_INTERVAL apart, per base.

    With an `engine` (the service's own database) the next free slot lives in a table, so
    every thread of every process sharing that database keeps to one pace; without one it
    lives in this object (all threads using it). `clock` and `sleep` are injectable so
    tests can run 30-second waits in no time."""

    def __init__(self, interval: float = REQUEST_INTERVAL, *, engine: sa.Engine | None = None,
                 clock=time.time, sleep=time.sleep):
        self.interval, self.engine, self.clock, self.sleep = interval, engine, clock, sleep
        self._lock = threading.Lock()
        self._next_at: dict[str, float] = {}
        self._rows: set[str] = set()
        if engine is not None:
            _throttle_metadata.create_all(engine)

    def wait(self, base_id: str) -> float:
        """Block until this caller may send one request to the base; returns the wait."""
        slot = self._reserve(base_id)
        delay = slot - self.clock()
        if delay > 0:
            self.sleep(delay)
        return max(delay, 0.0)

    def penalize(self, base_id: str, seconds: float) -> None:
        """After a 429: nobody sends to this base for `seconds`."""
        until = self.clock() + seconds
        if self.engine is None:
            with self._lock:
                self._next_at[base_id] = max(self._next_at.get(base_id, 0.0), until)
            return
        self._ensure_row(base_id)
        t = throttle_slots
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.base_id == base_id).where(t.c.next_at < until)
                         .values(next_at=until))

    def _reserve(self, base_id: str) -> float:
        """The next free slot. The clock is read once the slot is ours (inside the lock or
        transaction): a caller that waited for the lock must not book a slot in the past."""
        if self.engine is None:
            with self._lock:
                slot = max(self._next_at.get(base_id, 0.0), self.clock())
                self._next_at[base_id] = slot + self.interval
            return slot
        self._ensure_row(base_id)
        t = throttle_slots
        with self.engine.begin() as conn:   # SQLite: BEGIN IMMEDIATE; PostgreSQL: row lock
            stored = conn.execute(sa.select(t.c.next_at).where(t.c.base_id == base_id)
                                  .with_for_update()).scalar_one()
            slot = max(stored, self.clock())
            conn.execute(t.update().where(t.c.base_id == base_id).values(next_at=slot + self.interval))
        return slot

    def _ensure_row(self, base_id: str) -> None:
        if base_id in self._rows:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(throttle_slots.insert().values(base_id=base_id, next_at=0.0))
        except IntegrityError:
            pass    # another process made it
        self._rows.add(base_id)
