"""How far the catch-up job has read each form system (workflows/catchup.py)."""
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
