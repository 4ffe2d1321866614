"""Scans of flyers' QR codes: one count per tag and day, nothing else (docs/architecture.md
section 7: no address, no cookie, no user agent, nothing about the person scanning)."""
from __future__ import annotations

import json
from datetime import date

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .schema import flyer_scans, inbox

#: The INSERT constructs that know ON CONFLICT DO UPDATE (the same API on both engines).
_UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class ScansRepo:
    engine: sa.Engine

    def count_flyer_scan(self, tag: str, day: date) -> None:
        """Add one scan of `tag` on `day`, atomically (one upsert: concurrent scans all count)."""
        insert = _UPSERT[self.engine.dialect.name](flyer_scans).values(tag=tag, day=day, count=1)
        stmt = insert.on_conflict_do_update(index_elements=["tag", "day"],
                                            set_={"count": flyer_scans.c["count"] + 1})
        with self._write() as conn:
            conn.execute(stmt)

    def flyer_scan_counts(self, *, since: date | None = None, until: date | None = None) -> dict[str, int]:
        """Tag -> scans, over the days from `since` to `until` (both included; None: no bound)."""
        stmt = sa.select(flyer_scans.c.tag, sa.func.sum(flyer_scans.c["count"])).group_by(flyer_scans.c.tag)
        if since is not None:
            stmt = stmt.where(flyer_scans.c.day >= since)
        if until is not None:
            stmt = stmt.where(flyer_scans.c.day <= until)
        with self._read() as conn:
            return {tag: int(total) for tag, total in conn.execute(stmt)}

    def flyer_scans_by_day(self, tag: str) -> dict[date, int]:
        """Day -> scans of one tag."""
        stmt = sa.select(flyer_scans.c.day, flyer_scans.c["count"]).where(flyer_scans.c.tag == tag)
        with self._read() as conn:
            return {day: int(n) for day, n in conn.execute(stmt)}

    def flyer_submission_counts(self) -> dict[str, int]:
        """Tag -> submissions of the built-in form that came from that flyer (`?flyer=` kept in
        the posted answers), cases made or not. Only the tag is read from each row."""
        counts: dict[str, int] = {}
        stmt = sa.select(inbox.c.payload).where(inbox.c.source == "web")
        with self._read() as conn:
            for (payload,) in conn.execute(stmt):
                try:
                    tag = (json.loads(payload).get("answers") or {}).get("flyer") or ""
                except (ValueError, AttributeError):
                    continue
                if isinstance(tag, str) and tag:
                    counts[tag] = counts.get(tag, 0) + 1
        return counts
