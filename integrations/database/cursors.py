"""How far the catch-up job has read each form system (workflows/catchup.py), and the other
times the periodic jobs keep between runs and processes (workflows/watch.py: how far the
store-changes poll has read, when the Airtable webhook was last seen working): one table of
name and time."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .schema import catchup_cursors

_UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class CursorsRepo:
    engine: sa.Engine

    def catchup_read_to(self, source: str) -> datetime | None:
        """Where the catch-up of `source` has read to (None: never ran to the end)."""
        stmt = sa.select(catchup_cursors.c.read_to).where(catchup_cursors.c.source == source)
        with self._read() as conn:
            return conn.execute(stmt).scalar_one_or_none()

    def set_catchup_read_to(self, source: str, read_to: datetime) -> None:
        insert = _UPSERT[self.engine.dialect.name](catchup_cursors).values(source=source, read_to=read_to)
        stmt = insert.on_conflict_do_update(index_elements=["source"], set_={"read_to": read_to})
        with self._write() as conn:
            conn.execute(stmt)

    # The same table under plain names, for the marks of workflows/watch.py.
    def mark(self, name: str) -> datetime | None:
        return self.catchup_read_to(name)

    def set_mark(self, name: str, at: datetime) -> None:
        self.set_catchup_read_to(name, at)

    def marks(self, *names: str) -> dict[str, datetime | None]:
        """Several marks in one query (None for one never set)."""
        stmt = sa.select(catchup_cursors.c.source, catchup_cursors.c.read_to).where(
            catchup_cursors.c.source.in_(names))
        with self.engine.connect() as conn:
            found = dict(conn.execute(stmt).all())
        return {n: found.get(n) for n in names}

    def lower_mark(self, name: str, at: datetime) -> None:
        """The mark becomes `at` unless it is already earlier (one statement, so two writers
        cannot undo each other)."""
        least = sa.func.min if self.engine.dialect.name == "sqlite" else sa.func.least
        insert = _UPSERT[self.engine.dialect.name](catchup_cursors).values(source=name, read_to=at)
        stmt = insert.on_conflict_do_update(index_elements=["source"],
                                            set_={"read_to": least(catchup_cursors.c.read_to, insert.excluded.read_to)})
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def clear_mark_if(self, name: str, at: datetime) -> None:
        """Forget the mark if it still holds `at` (a newer value is kept)."""
        stmt = sa.delete(catchup_cursors).where(catchup_cursors.c.source == name,
                                                catchup_cursors.c.read_to == at)
        with self.engine.begin() as conn:
            conn.execute(stmt)
