"""Offers of a case to supporters, once-only case milestones, and the locks shared by every
process on the database (workflows/offers.py and deadlines.py rely on them)."""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from workflows.records import BY_HAND, TAKEN, Offer, from_row

from .schema import case_milestones, locks, offers


def _open_case_counts():
    latest = (sa.select(offers.c.case_id, sa.func.max(offers.c.round).label("round"))
              .group_by(offers.c.case_id).subquery())
    ended = sa.select(case_milestones.c.case_id).where(case_milestones.c.name.in_(("closed", "withdrawn")))
    return (sa.select(offers.c.supporter_id, sa.func.count())
            .join(latest, sa.and_(latest.c.case_id == offers.c.case_id, latest.c.round == offers.c.round))
            .where(offers.c.status.in_(("open", *TAKEN)))
            .where(offers.c.case_id.not_in(ended))
            .group_by(offers.c.supporter_id))


#: Built once: intake runs it for every case (building costs more than running it on SQLite).
_OPEN_CASE_COUNTS = _open_case_counts()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class OffersRepo:
    """Mixed into `Database`: needs its transactions (`_write`, `_read`) and `self.clock`."""

    # ---- locks ----
    @contextmanager
    def lock(self, name: str, *, ttl_seconds: int = 120, wait_seconds: float = 60):
        """A lock shared by every process on this database; a holder that dies frees it at ttl."""
        owner, deadline = _owner(), time.monotonic() + wait_seconds
        while True:
            now = self.clock.now()
            try:
                with self._write(may_conflict=True) as conn:
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
            with self._write() as conn:
                conn.execute(locks.delete().where(locks.c.name == name).where(locks.c.owner == owner))

    # ---- offers ----
    def offer_create(self, *, case_id: str, supporter_id: str, offered_at: datetime,
                     expires_at: datetime) -> Offer:
        """A new open offer, numbered after the case's earlier ones. Callers hold the case's
        offer lock; the unique (case, round) keeps two offers from sharing a number anyway."""
        with self._write() as conn:
            last = conn.execute(sa.select(sa.func.max(offers.c.round))
                                .where(offers.c.case_id == case_id)).scalar() or 0
            offer_id = conn.execute(offers.insert().values(
                case_id=case_id, round=last + 1, supporter_id=supporter_id, status="open",
                offered_at=offered_at, expires_at=expires_at)).inserted_primary_key[0]
        return self.offer_get(int(offer_id))

    def offer_by_hand(self, *, case_id: str, supporter_id: str, at: datetime) -> Offer | None:
        """Record that a coordinator gave the case to `supporter_id` by hand: a "by hand" row
        after the case's earlier ones, unless the latest row already gives it to them (accepted
        or by hand). Returns it, or None when nothing was recorded (theirs already, or another
        poll recorded it first)."""
        try:
            with self._write(may_conflict=True) as conn:
                last = conn.execute(sa.select(offers.c.round, offers.c.supporter_id, offers.c.status)
                                    .where(offers.c.case_id == case_id)
                                    .order_by(offers.c.round.desc()).limit(1)).first()
                if last is not None and last.supporter_id == supporter_id and last.status in TAKEN:
                    return None
                offer_id = conn.execute(offers.insert().values(
                    case_id=case_id, round=(last.round if last else 0) + 1, supporter_id=supporter_id,
                    status=BY_HAND, offered_at=at, expires_at=at, answered_at=at)).inserted_primary_key[0]
        except IntegrityError:
            return None
        return self.offer_get(int(offer_id))

    def offer_get(self, offer_id: int) -> Offer | None:
        with self._read() as conn:
            row = conn.execute(sa.select(offers).where(offers.c.id == offer_id)).mappings().first()
        return from_row(Offer, row) if row else None

    def offers_for_case(self, case_id: str) -> list[Offer]:
        """Every offer of the case, first to last."""
        with self._read() as conn:
            return [from_row(Offer, r) for r in conn.execute(sa.select(offers).where(offers.c.case_id == case_id)
                                                  .order_by(offers.c.round)).mappings()]

    def offers_all(self) -> list[Offer]:
        """Every offer of every case (the dashboard's report), by case and round."""
        with self._read() as conn:
            return [from_row(Offer, r) for r in conn.execute(sa.select(offers)
                                                  .order_by(offers.c.case_id, offers.c.round)).mappings()]

    def offers_open_for(self, supporter_id: str, now: datetime) -> list[Offer]:
        """The supporter's offers that are open and not past their expiry."""
        stmt = (sa.select(offers).where(offers.c.supporter_id == supporter_id)
                .where(offers.c.status == "open").where(offers.c.expires_at > now).order_by(offers.c.id))
        with self._read() as conn:
            return [from_row(Offer, r) for r in conn.execute(stmt).mappings()]

    def offers_expired(self, now: datetime, limit: int = 200) -> list[Offer]:
        """Open offers whose time is up (the periodic task moves each case on)."""
        stmt = (sa.select(offers).where(offers.c.status == "open").where(offers.c.expires_at <= now)
                .order_by(offers.c.expires_at).limit(limit))
        with self._read() as conn:
            return [from_row(Offer, r) for r in conn.execute(stmt).mappings()]

    def offer_close(self, offer_id: int, status: str, at: datetime) -> bool:
        """Move an open offer to `status`; False when it was no longer open (someone else
        answered it first), so only one answer ever wins."""
        stmt = (offers.update().where(offers.c.id == offer_id).where(offers.c.status == "open")
                .values(status=status, answered_at=at))
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def offer_update(self, offer_id: int, **values) -> None:
        with self._write() as conn:
            conn.execute(offers.update().where(offers.c.id == offer_id).values(**values))

    def open_case_counts(self) -> dict[str, int]:
        """Supporter record id -> open cases they hold, for matching: a case counts for the
        supporter of its latest offer while that offer is open (Offered) or accepted (Assigned,
        Contacted, Referred), or given to them by hand (`offer_by_hand`), until the case is
        closed or withdrawn (the milestones that workflows/offers.py writes, and
        workflows/followup.py when a coordinator sets the Status in Airtable). Our own
        database: no case store is listed for it."""
        with self._read() as conn:
            return {supporter: int(n) for supporter, n in conn.execute(_OPEN_CASE_COUNTS)}

    # ---- case milestones ----
    def milestone_done(self, case_id: str, name: str) -> bool:
        with self._read() as conn:
            return conn.execute(sa.select(case_milestones.c.at).where(case_milestones.c.case_id == case_id)
                                .where(case_milestones.c.name == name)).first() is not None

    def milestone_undo(self, case_id: str, names: tuple[str, ...]) -> bool:
        """Forget once-only steps that no longer hold (a coordinator reopened a closed case).
        Returns whether any of them was done."""
        where = sa.and_(case_milestones.c.case_id == case_id, case_milestones.c.name.in_(names))
        with self._read() as conn:
            if conn.execute(sa.select(case_milestones.c.name).where(where)).first() is None:
                return False
        with self._write() as conn:
            return conn.execute(case_milestones.delete().where(where)).rowcount > 0

    def milestone_mark(self, case_id: str, name: str, at: datetime) -> bool:
        """Record that a once-only step is done. Returns whether it is new."""
        try:
            with self._write(may_conflict=True) as conn:
                conn.execute(case_milestones.insert().values(case_id=case_id, name=name, at=at))
            return True
        except IntegrityError:
            return False
