"""AirtableCaseStore: the CaseStore of workflows/model.py on an Airtable base."""
from __future__ import annotations

import threading
import time
from datetime import datetime

import pyairtable
import requests
import sqlalchemy as sa
from pyairtable.formulas import EQ, NOT, OR, Field, FunctionCall, match

from integrations.airtable.pacing import Throttle
from integrations.airtable.schema import (CASE_KEY, CASES, EVENTS, FLYERS, MESSAGE_KEY, MESSAGES, RESOURCES,
                                          REVIEWERS, ROSTER_KEYS, SPECS, SUPPORTERS, _fields_of,
                                          _from_cell, _object_from, _to_cell)
from integrations.airtable.session import ThrottledSession
from workflows.errors import DuplicateRows
from workflows.model import (CASE_FIELDS, FLYER_FIELDS, MESSAGE_FIELDS, RESOURCE_FIELDS, REVIEWER_FIELDS,
                             SUPPORTER_FIELDS,
                             Case, Event, Flyer, FlyerExists, MessageRecord, Resource, Reviewer, Roster,
                             Supporter)

#: Supporters, reviewers and resources are read for every case; a coordinator's edit in
#: Airtable shows within this many seconds.
ROSTER_CACHE_SECONDS = 60.0


class AirtableCaseStore:
    """The CaseStore of workflows/model.py on an Airtable base. Keeps SqlCaseStore's behaviour;
    callers that create cases hold the per-case lock (as intake does), because Airtable upserts
    are not atomic between two processes."""

    #: Every read is a request against the plan's monthly cap: the periodic jobs skip reads
    #: that cannot find anything to do (workflows/watch.py).
    reads_are_requests = True

    def __init__(self, api_key: str, base_id: str, *, api_url: str = "https://api.airtable.com",
                 timeout: float = 10.0, throttle: Throttle | None = None,
                 roster_cache_seconds: float = ROSTER_CACHE_SECONDS):
        self.base_id = base_id
        self.throttle = throttle or Throttle()
        self.api = pyairtable.Api(api_key, timeout=(timeout, timeout), retry_strategy=None,
                                  endpoint_url=api_url)
        self.api.session = ThrottledSession(base_id, self.throttle)
        self.api.api_key = api_key          # puts the token on our session
        self.roster_cache_seconds = roster_cache_seconds
        self.monotonic = time.monotonic        # injectable, for the roster cache's age
        self._roster_cache: dict[str, tuple[float, list]] = {}
        self._roster_locks = {t: threading.Lock() for t in (SUPPORTERS, REVIEWERS, RESOURCES)}
        self._case_records: dict[str, str] = {}     # Case ID -> rec id; a record's id never changes
        self._last_miss = threading.local()

    @classmethod
    def from_settings(cls, values: dict, *, engine: sa.Engine | None = None) -> "AirtableCaseStore":
        """`engine`: the service's own database, where the pace is shared by every process
        (the composition root passes it); without one the pace is kept in this process only."""
        return cls(values["AIRTABLE_API_KEY"], values["AIRTABLE_BASE_ID"],
                   api_url=values.get("AIRTABLE_API_URL") or "https://api.airtable.com",
                   timeout=float(values.get("OUTSIDE_TIMEOUT_SECONDS") or 10),
                   throttle=Throttle(engine=engine))

    def table(self, name: str) -> pyairtable.Table:
        return self.api.table(self.base_id, name)

    # ---- cases ----
    def find_case(self, *, case_id=None, source_response_id=None) -> Case | None:
        record = self._find_case_record(case_id=case_id, source_response_id=source_response_id)
        # Remember a miss for create_case, which the caller (holding the case lock) is about
        # to call: it then need not ask Airtable the same question again.
        self._last_miss.value = (source_response_id, self.monotonic()) \
            if record is None and case_id is None else None
        return self._case(record) if record else None

    def _find_case_record(self, *, case_id=None, source_response_id=None) -> dict | None:
        if case_id is not None:
            formula = match({"Case ID": case_id})
        elif source_response_id is not None:
            formula = match({CASE_KEY: source_response_id})
        else:
            raise ValueError("find_case needs case_id or source_response_id")
        return self.table(CASES).first(formula=formula)

    def create_case(self, case: Case, *, unseen: bool = False) -> Case:
        """Upsert on Source Response ID; an existing case is returned unchanged. It is looked
        for first unless the caller knows it was never made (`unseen`) or has just missed it."""
        missed = getattr(self._last_miss, "value", None)
        self._last_miss.value = None
        just_missed = missed and missed[0] == case.source_response_id and self.monotonic() - missed[1] < 5
        if not (unseen or just_missed):
            existing = self._find_case_record(source_response_id=case.source_response_id)
            if existing:
                return self._case(existing)
        fields = _fields_of(case, CASE_FIELDS, CASES)
        try:
            result = self.table(CASES).batch_upsert([{"fields": fields}], key_fields=[CASE_KEY])
        except requests.HTTPError as exc:
            if getattr(exc.response, "status_code", None) == 422:
                self._refuse_duplicates(case.source_response_id)
            raise
        return self._case(result["records"][0])

    def _refuse_duplicates(self, source_response_id: str) -> None:
        """After a 422 on the upsert: when several rows hold this Source Response ID (Airtable's
        "multiple matches"; its exact error body is UNCONFIRMED, so we look rather than parse),
        raise DuplicateRows naming their Case IDs."""
        rows = self.table(CASES).all(formula=match({CASE_KEY: source_response_id}))
        if len(rows) > 1:
            raise DuplicateRows(CASES, CASE_KEY, source_response_id,
                                [str(r["fields"].get("Case ID") or r["id"]) for r in rows])

    def update_case(self, case_id: str, **changes) -> Case:
        try:
            fields = {CASE_FIELDS[k]: _to_cell(SPECS[CASES][CASE_FIELDS[k]], v) for k, v in changes.items()}
        except KeyError as exc:
            raise TypeError(f"update_case() got an unknown field {exc.args[0]!r}") from None
        cached = case_id in self._case_records
        try:
            record = self.table(CASES).update(self._case_record_id(case_id), fields)
        except requests.HTTPError as exc:
            if not cached or getattr(exc.response, "status_code", None) not in (403, 404):
                raise
            self._case_records.pop(case_id, None)       # deleted in Airtable since we saw it?
            record = self.table(CASES).update(self._case_record_id(case_id), fields)
        return self._case(record)

    def list_cases(self, status=None) -> list[Case]:
        options = {"formula": match({"Status": status})} if status else {}
        cases = [self._case(r) for r in self.table(CASES).all(page_size=100, **options)]
        return sorted(cases, key=lambda c: (c.submitted_at is None, c.submitted_at or datetime.min))

    def cases_changed_since(self, since: datetime | None) -> list[Case]:
        """The cases made or changed (by anyone, our own writes too) after `since`, in one
        listing (a page per 100 cases); every case when `since` is None. Airtable leaves
        LAST_MODIFIED_TIME() blank on a record not changed since it was made, hence the
        fallback to CREATED_TIME()."""
        if since is None:
            return self.list_cases()
        touched = FunctionCall("IF", NOT(FunctionCall("LAST_MODIFIED_TIME")), FunctionCall("CREATED_TIME"),
                               FunctionCall("LAST_MODIFIED_TIME"))
        formula = FunctionCall("IS_AFTER", touched, since)
        return [self._case(r) for r in self.table(CASES).all(page_size=100, formula=formula)]

    def _case(self, record: dict) -> Case:
        case = _object_from(record, Case, CASE_FIELDS, CASES)
        if case.case_id:
            self._case_records[case.case_id] = record["id"]
        return case

    def _case_record_id(self, case_id: str, *, required: bool = True) -> str:
        rec_id = self._case_records.get(case_id)
        if rec_id is None:
            record = self._find_case_record(case_id=case_id)
            if record is None:
                if required:
                    raise KeyError(f"no case {case_id}")
                return ""
            rec_id = self._case(record).record_id
        return rec_id

    # ---- events ----
    def add_events(self, new_events: list[Event]) -> None:
        if not new_events:
            return
        self.table(EVENTS).batch_create([{
            "Event": e.event, "Case": [self._case_record_id(e.case_id)],
            "At": _to_cell(SPECS[EVENTS]["At"], e.at), "Actor": e.actor} for e in new_events])

    def list_events(self, case_id: str) -> list[Event]:
        # A link field reads in a formula as its linked records' primary values (Case IDs).
        formula = EQ(FunctionCall("ARRAYJOIN", Field("Case")), case_id)
        records = self.table(EVENTS).all(formula=formula, page_size=100)
        found = [Event(case_id=case_id, event=r["fields"].get("Event", ""),
                       at=_from_cell(SPECS[EVENTS]["At"], r["fields"].get("At")),
                       actor=r["fields"].get("Actor", "")) for r in records]
        return sorted(found, key=lambda e: e.at)

    # ---- roster ----
    def supporters(self) -> list[Supporter]:
        return self._roster(SUPPORTERS, Supporter, SUPPORTER_FIELDS)

    def reviewers(self) -> list[Reviewer]:
        return self._roster(REVIEWERS, Reviewer, REVIEWER_FIELDS)

    def resources(self) -> list[Resource]:
        return self._roster(RESOURCES, Resource, RESOURCE_FIELDS)

    def update_supporter(self, record_id: str, **changes) -> Supporter:
        try:
            fields = {SUPPORTER_FIELDS[k]: _to_cell(SPECS[SUPPORTERS][SUPPORTER_FIELDS[k]], v)
                      for k, v in changes.items()}
        except KeyError as exc:
            raise TypeError(f"update_supporter() got an unknown field {exc.args[0]!r}") from None
        try:
            record = self.table(SUPPORTERS).update(record_id, fields)
        except requests.HTTPError as exc:
            if getattr(exc.response, "status_code", None) in (403, 404, 422):
                raise KeyError(f"no supporter {record_id}") from None
            raise
        with self._roster_locks[SUPPORTERS]:
            self._roster_cache.pop(SUPPORTERS, None)     # our own change shows at once
        return _object_from(record, Supporter, SUPPORTER_FIELDS, SUPPORTERS)

    def _roster(self, table: str, cls, names: dict) -> list:
        with self._roster_locks[table]:     # one reader per table; the other threads wait for it
            now = self.monotonic()
            cached = self._roster_cache.get(table)
            if cached is None or now - cached[0] >= self.roster_cache_seconds:
                items = [_object_from(r, cls, names, table) for r in self.table(table).all(page_size=100)]
                cached = self._roster_cache[table] = (now, items)
            return list(cached[1])

    def import_roster(self, roster: Roster) -> dict:
        """Upsert on Name + Institution. Airtable merges only on cells that have a value, so
        people and resources of the whole program (no Institution) are matched by a read."""
        counts = {}
        for table, items, names, label in (
                (SUPPORTERS, roster.supporters, SUPPORTER_FIELDS, "supporters"),
                (REVIEWERS, roster.reviewers, REVIEWER_FIELDS, "reviewers"),
                (RESOURCES, roster.resources, RESOURCE_FIELDS, "resources")):
            latest = {(i.name, i.institution): i for i in items}     # a repeated row: the last wins
            keyed = [_fields_of(i, names, table) for (n, inst), i in latest.items() if inst]
            unkeyed = {n: _fields_of(i, names, table) for (n, inst), i in latest.items() if not inst}
            if keyed:
                self.table(table).batch_upsert([{"fields": f} for f in keyed], key_fields=ROSTER_KEYS)
            if unkeyed:
                existing = {r["fields"].get("Name"): r["id"]
                            for r in self.table(table).all(formula=match({"Institution": ""}), page_size=100)}
                updates = [{"id": existing[n], "fields": f} for n, f in unkeyed.items() if n in existing]
                creates = [f for n, f in unkeyed.items() if n not in existing]
                if updates:
                    self.table(table).batch_update(updates)
                if creates:
                    self.table(table).batch_create(creates)
            counts[label] = len(items)
            with self._roster_locks[table]:
                self._roster_cache.pop(table, None)
        return counts

    def roster_is_empty(self) -> bool:
        return self.table(SUPPORTERS).first() is None and self.table(REVIEWERS).first() is None

    # ---- the purge ----
    def case_records(self, case_id: str) -> list[str]:
        """The record ids holding this Case ID (one, except halfway through a purge)."""
        return [r["id"] for r in self.table(CASES).all(formula=match({"Case ID": case_id}), page_size=100)]

    def replace_case(self, kept: Case, old_records: list[str] | None = None) -> int:
        """The purge. Changing cells would leave the old values in Airtable's record revision
        history, so the case's records are deleted (Airtable keeps a deleted record in the
        base's trash for 7 days) and a de-identified record with the same Case ID is written in
        their place. The case's Messages rows are deleted too; its Events (fixed phrases, no
        request text: their history holds only the link) are kept, relinked to the new record,
        so the audit trail keeps its times.

        `old_records`: the records that held the case before the purge began (purge state keeps
        them), so that a purge killed halfway and run again keeps the de-identified record it
        made and deletes the rest. Returns how many records were deleted (Cases and Messages)."""
        case_id = kept.case_id
        current = self.case_records(case_id)
        old = set(current if old_records is None else old_records)
        new = [r for r in current if r not in old]
        if new:
            keep = new[0]
        else:
            fields = _fields_of(kept, CASE_FIELDS, CASES)
            keep = self.table(CASES).create(fields)["id"]
        self._case_records[case_id] = keep
        linked = EQ(FunctionCall("ARRAYJOIN", Field("Case")), case_id)
        events = self.table(EVENTS).all(formula=linked, page_size=100)
        relink = [{"id": r["id"], "fields": {"Case": [keep]}} for r in events if r["fields"].get("Case") != [keep]]
        if relink:
            self.table(EVENTS).batch_update(relink)
        message_rows = [r["id"] for r in self.table(MESSAGES).all(formula=linked, page_size=100)]
        doomed = [r for r in current if r != keep]
        if message_rows:
            self.table(MESSAGES).batch_delete(message_rows)
        if doomed:
            self.table(CASES).batch_delete(doomed)
        return len(message_rows) + len([r for r in doomed if r in old])

    # ---- messages ----
    def mirror_messages(self, records: list[MessageRecord]) -> None:
        """Show ledger rows in the Messages table (upsert on Key); no message text."""
        if not records:
            return
        self._look_up_cases({r.case_id for r in records})
        rows = []
        for r in records:
            fields = _fields_of(r, {k: v for k, v in MESSAGE_FIELDS.items() if k != "case_id"}, MESSAGES)
            case_rec = self._case_records.get(r.case_id, "")
            fields["Case"] = [case_rec] if case_rec else []
            rows.append({"fields": fields})
        self.table(MESSAGES).batch_upsert(rows, key_fields=[MESSAGE_KEY])

    def _look_up_cases(self, case_ids: set[str]) -> None:
        """Learn the record ids of these cases that we have not seen yet, in one request per
        50 (a case no longer in the base is simply not found)."""
        unknown = sorted(c for c in case_ids if c and c not in self._case_records)
        for start in range(0, len(unknown), 50):
            formula = OR(*(match({"Case ID": c}) for c in unknown[start:start + 50]))
            for record in self.table(CASES).all(formula=formula, page_size=100):
                self._case(record)

    # ---- flyers ----
    def create_flyer(self, flyer: Flyer) -> Flyer:
        """Airtable has no unique fields: the tag is looked up first (flyers are made one at a
        time, by `flask flyers make`), and a taken tag raises FlyerExists."""
        if self.find_flyer(flyer.tag) is not None:
            raise FlyerExists(flyer.tag)
        record = self.table(FLYERS).create(_fields_of(flyer, FLYER_FIELDS, FLYERS))
        return _object_from(record, Flyer, FLYER_FIELDS, FLYERS)

    def flyers(self) -> list[Flyer]:
        found = [_object_from(r, Flyer, FLYER_FIELDS, FLYERS) for r in self.table(FLYERS).all(page_size=100)]
        return sorted(found, key=lambda f: (f.created_at is None, f.created_at or datetime.min))

    def find_flyer(self, tag: str) -> Flyer | None:
        record = self.table(FLYERS).first(formula=match({"Tag": tag}))
        return _object_from(record, Flyer, FLYER_FIELDS, FLYERS) if record else None
