"""The case store on the service's own database (the embedded default when Airtable is not
configured): cases, events and the roster, as the `CaseStore` of workflows/model.py."""
from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from dataclasses import fields as dc_fields
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from workflows.model import (Case, Event, Flyer, FlyerExists, MessageRecord, Resource, Reviewer, Roster,
                             Supporter)

from .schema import cases, events, flyers, resources, reviewers, supporters


#: Intake reads the supporters and reviewers for every case; each process keeps what it read
#: this long. A change another process makes (`flask roster import`, a supporter's answer or
#: pause taken by the web process) shows within it; one this process makes, at once.
ROSTER_CACHE_SECONDS = 1.0
#: (database URL, table) -> (when read, by the store's monotonic clock; the rows).
_roster_cache: dict[tuple[str, str], tuple[float, list]] = {}
#: Counts this process's roster changes: a read that a change overtook is not kept.
_roster_changes = [0]
_roster_lock = threading.Lock()


@functools.cache
def _names(cls) -> frozenset[str]:
    return frozenset(f.name for f in dc_fields(cls))


def _row_to(cls, row) -> object:
    names = _names(cls)
    values = {k: v for k, v in row.items() if k in names}
    values["record_id"] = str(row["id"])
    return cls(**values)


def _values_of(obj, table: sa.Table) -> dict:
    return {c.name: getattr(obj, c.name) for c in table.columns if c.name != "id"}


# Built once (intake runs them for every case; building costs more than running on SQLite).
_BY_CASE_ID = sa.select(cases).where(cases.c.case_id == sa.bindparam("value_"))
_BY_SOURCE_RESPONSE_ID = sa.select(cases).where(cases.c.source_response_id == sa.bindparam("value_"))


@functools.cache
def _every_row(table: sa.Table, cls) -> tuple[sa.Select, tuple[str, ...]]:
    """SELECT id and the columns `cls` names, in id order, built once (intake reads the
    roster for every case), and those columns' names."""
    columns = tuple(c.name for c in table.columns if c.name in _names(cls) and c.name != "record_id")
    return sa.select(table.c.id, *(table.c[name] for name in columns)).order_by(table.c.id), columns


@functools.cache
def _insert_case(dialect: str):
    """INSERT ... ON CONFLICT (source_response_id) DO NOTHING RETURNING the row: the same
    submission again inserts nothing (no error, so no savepoint inside a unit of work)."""
    construct = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[dialect]
    return (construct(cases).on_conflict_do_nothing(index_elements=[cases.c.source_response_id])
            .returning(*cases.c))


class SqlCaseStore:
    """The case store on the service's own database (the embedded default)."""

    #: Its rows live in the Context's own database: its writes can join `db.unit_of_work()`.
    in_database = True

    def __init__(self, db):
        self.engine, self.url, self._db = db.engine, db.url, db
        # The database's transactions: each call its own, or the thread's unit of work.
        self._write, self._read = db._write, db._read
        self.monotonic = time.monotonic     # injectable, for the roster cache's age

    def find_case(self, *, case_id=None, source_response_id=None) -> Case | None:
        if case_id is not None:
            stmt, value = _BY_CASE_ID, case_id
        elif source_response_id is not None:
            stmt, value = _BY_SOURCE_RESPONSE_ID, source_response_id
        else:
            raise ValueError("find_case needs case_id or source_response_id")
        with self._read() as conn:
            row = conn.execute(stmt, {"value_": value}).mappings().first()
        return _row_to(Case, row) if row else None

    def create_case(self, case: Case, *, unseen: bool = False) -> Case:
        """`unseen` changes nothing here: the insert itself finds an existing case. The case
        as stored: the new row, returned by its insert, or the one already there for the same
        submission (kept as it is)."""
        with self._write() as conn:
            row = conn.execute(_insert_case(self.engine.dialect.name), _values_of(case, cases)).mappings().first()
        if row is not None:
            return _row_to(Case, row)
        return self.find_case(source_response_id=case.source_response_id)

    def update_case(self, case_id: str, **changes) -> Case:
        with self._write() as conn:
            if conn.execute(cases.update().where(cases.c.case_id == case_id).values(**changes)).rowcount != 1:
                raise KeyError(f"no case {case_id}")
        return self.find_case(case_id=case_id)

    def list_cases(self, status=None) -> list[Case]:
        stmt = sa.select(cases).order_by(cases.c.submitted_at)
        if status:
            stmt = stmt.where(cases.c.status == status)
        with self._read() as conn:
            return [_row_to(Case, r) for r in conn.execute(stmt).mappings()]

    def cases_changed_since(self, since: datetime | None) -> list[Case]:
        """Every case: our own database keeps no time of change, and reading it costs no
        outside request (the Airtable store reads only what changed)."""
        return self.list_cases()

    def add_events(self, new_events: list[Event]) -> None:
        if new_events:
            with self._write() as conn:
                conn.execute(events.insert(), [
                    {"case_id": e.case_id, "event": e.event, "at": e.at, "actor": e.actor} for e in new_events])

    def list_events(self, case_id: str) -> list[Event]:
        with self._read() as conn:
            rows = conn.execute(sa.select(events).where(events.c.case_id == case_id).order_by(events.c.id)).mappings()
            return [Event(case_id=r["case_id"], event=r["event"], at=r["at"], actor=r["actor"]) for r in rows]

    def _all(self, table, cls):
        stmt, columns = _every_row(table, cls)
        with self._read() as conn:
            return [cls(**dict(zip(columns, values)), record_id=str(key)) for key, *values in conn.execute(stmt)]

    def supporters(self) -> list[Supporter]:
        return self._roster(supporters, Supporter)

    def reviewers(self) -> list[Reviewer]:
        return self._roster(reviewers, Reviewer)

    def _roster(self, table, cls) -> list:
        """`_all`, kept ROSTER_CACHE_SECONDS in this process. Never holds a change that is not
        committed: only this process's roster writes could put one in a read, none runs inside
        a unit of work (`_changing_roster`), and each drops what was kept once committed."""
        key = (self.url, table.name)
        with _roster_lock:
            kept, changes = _roster_cache.get(key), _roster_changes[0]
        now = self.monotonic()
        if kept is not None and 0 <= now - kept[0] < ROSTER_CACHE_SECONDS:
            return list(kept[1])
        items = self._all(table, cls)
        with _roster_lock:
            if _roster_changes[0] == changes:
                _roster_cache[key] = (now, items)
        return list(items)

    @contextmanager
    def _changing_roster(self):
        """A roster write of this process: what was kept is dropped once it is committed. Not
        inside a unit of work, whose commit comes later: a read in between would keep a change
        that may yet be undone."""
        if self._db.in_unit_of_work():
            raise RuntimeError("the roster is not written inside a unit of work (its cache would see it uncommitted)")
        try:
            with self._write() as conn:
                yield conn
        finally:
            with _roster_lock:
                _roster_changes[0] += 1
                for key in [key for key in _roster_cache if key[0] == self.url]:
                    del _roster_cache[key]

    def resources(self) -> list[Resource]:
        return self._all(resources, Resource)

    def update_supporter(self, record_id: str, **changes) -> Supporter:
        unknown = set(changes) - {c.name for c in supporters.columns}
        if unknown or not str(record_id).isdigit():
            raise (TypeError(f"update_supporter() got unknown fields {sorted(unknown)}") if unknown
                   else KeyError(f"no supporter {record_id}"))
        with self._changing_roster() as conn:
            if conn.execute(supporters.update().where(supporters.c.id == int(record_id))
                            .values(**changes)).rowcount != 1:
                raise KeyError(f"no supporter {record_id}")
            row = conn.execute(sa.select(supporters).where(supporters.c.id == int(record_id))).mappings().one()
        return _row_to(Supporter, row)

    def import_roster(self, roster: Roster) -> dict:
        counts = {}
        with self._changing_roster() as conn:
            for table, items, label in ((supporters, roster.supporters, "supporters"),
                                        (reviewers, roster.reviewers, "reviewers"),
                                        (resources, roster.resources, "resources")):
                for item in items:
                    values = _values_of(item, table)
                    updated = conn.execute(table.update().where(table.c.name == item.name)
                                           .where(table.c.institution == item.institution).values(**values)).rowcount
                    if not updated:
                        conn.execute(table.insert().values(**values))
                counts[label] = len(items)
        return counts

    def roster_is_empty(self) -> bool:
        with self._read() as conn:
            return not conn.execute(sa.select(sa.func.count()).select_from(supporters)).scalar() \
                and not conn.execute(sa.select(sa.func.count()).select_from(reviewers)).scalar()

    def mirror_messages(self, records: list[MessageRecord]) -> None:
        """The ledger is already in this database: nothing to mirror."""

    def case_records(self, case_id: str) -> list[str]:
        with self._read() as conn:
            return [str(r[0]) for r in conn.execute(sa.select(cases.c.id).where(cases.c.case_id == case_id))]

    def replace_case(self, kept: Case, old_records: list[str] | None = None) -> int:
        """The purge: the case's row becomes `kept` (its de-identified fields; the rest empty).
        With SQLite's secure_delete the old values are zeroed in the file. Returns how many
        fields held something and now do not."""
        with self._write() as conn:
            row = conn.execute(sa.select(cases).where(cases.c.case_id == kept.case_id)).mappings().first()
            if row is None:
                raise KeyError(f"no case {kept.case_id}")
            values = _values_of(kept, cases)
            cleared = sum(1 for k, v in values.items() if row[k] not in (None, "", False, 0) and v != row[k])
            conn.execute(cases.update().where(cases.c.case_id == kept.case_id).values(**values))
        return cleared

    # ---- flyers ----
    def create_flyer(self, flyer: Flyer) -> Flyer:
        """The tag is unique by the table's constraint: a taken tag raises FlyerExists."""
        try:
            with self._write(may_conflict=True) as conn:
                conn.execute(flyers.insert().values(**_values_of(flyer, flyers)))
        except IntegrityError:
            raise FlyerExists(flyer.tag) from None
        return self.find_flyer(flyer.tag)

    def flyers(self) -> list[Flyer]:
        return self._all(flyers, Flyer)

    def find_flyer(self, tag: str) -> Flyer | None:
        with self._read() as conn:
            row = conn.execute(sa.select(flyers).where(flyers.c.tag == tag)).mappings().first()
        return _row_to(Flyer, row) if row else None
