"""Request pacing for an Airtable base, shared by every thread and, through the service's own
database, by every process: Airtable allows 5 requests a second per base, counted as they
arrive, and refuses everything for 30 s after a 429.

Spacing the moments requests are *sent* is not enough: on a busy machine a request can leave
late (the thread is descheduled between its turn and the socket), and late requests bunch up
at Airtable behind on-time ones. So each request holds a place from the moment it may go
until HOLD_SECONDS after its answer came back, and at most REQUESTS_PER_SECOND places are held
at once. A request arrives somewhere between the two moments, so among the requests that
arrive within any one second, the last one to start found every other one started and not
yet a second past its answer: all holding places. However late each one left, no second at
Airtable sees more than REQUESTS_PER_SECOND of ours.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

#: Airtable's documented limit, per base, for every API (records and metadata).
REQUESTS_PER_SECOND = 5
#: How long after its answer a request keeps its place: Airtable's second, and a tenth of a
#: second for the two clocks' ticks.
HOLD_SECONDS = 1.1
#: After a 429 Airtable refuses every request to the base for 30 s.
RATE_LIMIT_WAIT_SECONDS = 30.0
#: A place still held this long after its request started belongs to a process that died
#: mid-request (a request gives up long before: OUTSIDE_TIMEOUT_SECONDS, 10 s, per read).
STALE_SECONDS = 60.0
#: How often a waiting process looks again while every place is held by a request in flight.
POLL_SECONDS = 0.02


_throttle_metadata = sa.MetaData()
throttle_slots = sa.Table(
    "airtable_throttle", _throttle_metadata,
    sa.Column("base_id", sa.String(40), primary_key=True),
    sa.Column("next_at", sa.Float, nullable=False),     # Unix time before which nothing is sent (a 429)
)
throttle_places = sa.Table(
    "airtable_throttle_places", _throttle_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("base_id", sa.String(40), nullable=False, index=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("answered_at", sa.Float),                 # None while the request is in flight
)


class Throttle:
    """At most `limit` requests to a base in any one second, as Airtable receives them.

    `limit` 0: no pacing at all (tests that do not measure it); a 429 is still waited out.
    With an `engine` (the service's own database) the places live in a table, so every thread
    of every process sharing that database keeps to one limit; without one they live in this
    object (all threads using it). `clock` and `sleep` are injectable so tests can run
    30-second waits in no time."""

    def __init__(self, limit: int = REQUESTS_PER_SECOND, *, engine: sa.Engine | None = None,
                 clock=time.time, sleep=time.sleep):
        self.limit, self.engine, self.clock, self.sleep = limit, engine, clock, sleep
        self._lock = threading.Lock()
        self._waiting: dict[str, threading.Lock] = {}       # one waiter per base and process
        self._not_before: dict[str, float] = {}
        self._places: dict[str, dict[int, list]] = {}      # base -> id -> [started, answered]
        self._next_id = 0
        self._rows: set[str] = set()
        if engine is not None:
            _throttle_metadata.create_all(engine)

    @contextmanager
    def request(self, base_id: str):
        """Hold a place for one request to the base: waits for it, frees it once the
        request is over (answered or failed)."""
        place = self._take(base_id)
        try:
            yield
        finally:
            self._free(base_id, place)

    def penalize(self, base_id: str, seconds: float) -> None:
        """After a 429: nobody sends to this base for `seconds`."""
        until = self.clock() + seconds
        if self.engine is None:
            with self._lock:
                self._not_before[base_id] = max(self._not_before.get(base_id, 0.0), until)
            return
        self._ensure_row(base_id)
        t = throttle_slots
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.base_id == base_id).where(t.c.next_at < until)
                         .values(next_at=until))

    def _take(self, base_id: str) -> int | None:
        with self._lock:
            waiting = self._waiting.setdefault(base_id, threading.Lock())
        with waiting:       # this process's other threads queue here, not in the database
            while True:
                place, wait = self._try(base_id)
                if place is not None:
                    return place
                self.sleep(max(wait, POLL_SECONDS))

    def _try(self, base_id: str) -> tuple[int | None, float]:
        """(a place, 0) when one is free now (place 0: none needed, unpaced), else (None, how
        long to wait before looking again). The clock is read once the state is ours (inside
        the lock or transaction)."""
        if not self.limit:
            return self._unpaced(base_id)
        if self.engine is None:
            with self._lock:
                now = self.clock()
                places = self._places.setdefault(base_id, {})
                for pid in [p for p, (started, answered) in places.items() if _over(now, started, answered)]:
                    del places[pid]
                wait = _wait(now, self._not_before.get(base_id, 0.0), places.values(), self.limit)
                if wait > 0:
                    return None, wait
                self._next_id += 1
                places[self._next_id] = [now, None]
                return self._next_id, 0.0
        self._ensure_row(base_id)
        t, p = throttle_slots, throttle_places
        with self.engine.begin() as conn:   # SQLite: BEGIN IMMEDIATE; PostgreSQL: row lock
            not_before = conn.execute(sa.select(t.c.next_at).where(t.c.base_id == base_id)
                                      .with_for_update()).scalar_one()
            now = self.clock()
            conn.execute(p.delete().where(p.c.base_id == base_id).where(sa.or_(
                p.c.answered_at <= now - HOLD_SECONDS, p.c.started_at <= now - STALE_SECONDS)))
            held = conn.execute(sa.select(p.c.started_at, p.c.answered_at).where(p.c.base_id == base_id)).all()
            wait = _wait(now, not_before, held, self.limit)
            if wait > 0:
                return None, wait
            return conn.execute(p.insert().values(base_id=base_id, started_at=now)).inserted_primary_key[0], 0.0

    def _unpaced(self, base_id: str) -> tuple[int | None, float]:
        if self.engine is None:
            with self._lock:
                wait = self._not_before.get(base_id, 0.0) - self.clock()
        else:
            self._ensure_row(base_id)
            with self.engine.connect() as conn:
                not_before = conn.execute(sa.select(throttle_slots.c.next_at)
                                          .where(throttle_slots.c.base_id == base_id)).scalar_one()
            wait = not_before - self.clock()
        return (None, wait) if wait > 0 else (0, 0.0)

    def _free(self, base_id: str, place: int | None) -> None:
        if not place:
            return
        if self.engine is None:
            with self._lock:
                entry = self._places.get(base_id, {}).get(place)
                if entry is not None:
                    entry[1] = self.clock()
            return
        with self.engine.begin() as conn:
            conn.execute(throttle_places.update().where(throttle_places.c.id == place)
                         .values(answered_at=self.clock()))

    def _ensure_row(self, base_id: str) -> None:
        if base_id in self._rows:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(throttle_slots.insert().values(base_id=base_id, next_at=0.0))
        except IntegrityError:
            pass    # another process made it
        self._rows.add(base_id)


def _over(now: float, started: float, answered: float | None) -> bool:
    """Whether a place is free again: a second past its answer, or left by a dead process."""
    return (answered is not None and answered <= now - HOLD_SECONDS) or started <= now - STALE_SECONDS


def _wait(now: float, not_before: float, held, limit: int) -> float:
    """0 when a request may go now; else how long until it may (or until it is worth looking
    again, POLL_SECONDS, while every place is held by a request still in flight)."""
    if now < not_before:
        return not_before - now
    held = list(held)
    if len(held) < limit:
        return 0.0
    answered = sorted(a for _, a in held if a is not None)
    needed = len(held) - limit + 1        # places that must free up
    if len(answered) < needed:
        return POLL_SECONDS
    return max(answered[needed - 1] + HOLD_SECONDS - now, 0.0) or POLL_SECONDS
