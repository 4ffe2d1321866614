"""Airtable: the case store on an Airtable base (pyairtable), and `flask airtable init|check`.

Connect:
1. Create a base (or use an empty one) and a personal access token at
   https://airtable.com/create/tokens with the scopes data.records:read, data.records:write,
   schema.bases:read and schema.bases:write, and access to that base.
2. Set AIRTABLE_API_KEY (the token) and AIRTABLE_BASE_ID (`app...`, from the base's URL).
   AIRTABLE_API_URL stays at https://api.airtable.com except for tests and sandboxes.
3. Run `flask --app app airtable init` (creates the tables and fields of docs/architecture.md section 6;
   safe to run again), then `flask --app app roster import roster.csv`.
4. `flask --app app airtable check` reports drift (a field renamed, retyped or deleted).
5. So that an approval in Airtable is acted on within seconds (not only by the poll every
   minute): give the token the webhook:manage scope too, set PUBLIC_BASE_URL to the https
   address Airtable can reach, run `flask --app app airtable webhook create`, and set the
   AIRTABLE_WEBHOOK_SECRET it prints (shown once) on the web processes. The worker refreshes
   the webhook before Airtable's 7-day expiry; `flask airtable webhook list|refresh` show
   and do it by hand.

The webhook (`POST /webhooks/airtable`) is only a nudge: Airtable's ping names no record and
no change. Its X-Airtable-Content-MAC (HMAC-SHA256 of the raw body, keyed with the
base64-decoded secret) is checked in constant time, then a poll of the Approved cases is
queued; nothing is fetched while Airtable waits. The poll, not the ping, is the truth, so
Peerline keeps no payload cursor: reading the payloads would cost a request and still need
the poll (what matters is the case's state now, not the list of edits), and a missed ping
costs at most a minute, when the periodic poll runs anyway.

Behaviour is the SQL store's (the contract suite runs on both). Airtable allows 5 requests a
second per base and refuses everything for 30 s after a 429, so every request first takes a
slot from a throttle shared by all threads and, through the service's own database, by every
process; a 429 is waited out (30 s, a few times) rather than treated as a failure. Formulas
are built with `pyairtable.formulas` only.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import click
import pyairtable
import requests
import sqlalchemy as sa
from flask import Blueprint, current_app
from flask.cli import AppGroup
from pyairtable.formulas import EQ, Field, FunctionCall, match
from pyairtable.utils import datetime_from_iso_str, datetime_to_iso_str
from sqlalchemy.exc import IntegrityError

from integrations._webhooks import Ignored, MalformedPayload, SignatureError, Webhook, parse_json
from workflows.notify import show_time
from workflows.model import (CASE_FIELDS, CONTACT_CHOICES, FOR_CHOICES, MESSAGE_FIELDS, PREFERENCES,
                             RESOURCE_FIELDS, REVIEWER_FIELDS, STATUSES, SUPPORTER_FIELDS, URGENCIES,
                             Case, Event, MessageRecord, Resource, Reviewer, Roster, Supporter)

log = logging.getLogger("peerline.airtable")

#: Airtable's documented limit, per base, for every API (records and metadata).
REQUESTS_PER_SECOND = 5
#: Spacing between our requests: the limit's interval plus 10 %, so that network jitter cannot
#: bunch six of our requests into one of Airtable's seconds.
REQUEST_INTERVAL = 1.1 / REQUESTS_PER_SECOND
#: After a 429 Airtable refuses every request to the base for 30 s.
RATE_LIMIT_WAIT_SECONDS = 30.0
#: 429s waited out per request before giving up (the inbox retries it later).
RATE_LIMIT_RETRIES = 3
#: 5xx answers and connection failures retried per request, with backoff 1, 2, 4 s.
ERROR_RETRIES = 3
#: Supporters, reviewers and resources are read for every case; a coordinator's edit in
#: Airtable shows within this many seconds.
ROSTER_CACHE_SECONDS = 60.0


# ---------------------------------------------------------------------------------------------
# The tables of docs/architecture.md section 6, with their Airtable field types
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    options: dict | None = None
    link_to: str = ""       # table name, for multipleRecordLinks


def _text(name):
    return FieldSpec(name, "singleLineText")


def _long(name):
    return FieldSpec(name, "multilineText")


def _select(name, choices):
    return FieldSpec(name, "singleSelect", {"choices": [{"name": c} for c in choices]})


def _when(name):
    return FieldSpec(name, "dateTime")     # options (display time zone) filled in at init


def _check(name):
    return FieldSpec(name, "checkbox", {"icon": "check", "color": "greenBright"})


def _link(name, table):
    return FieldSpec(name, "multipleRecordLinks", link_to=table)


CASES, SUPPORTERS, REVIEWERS, RESOURCES, MESSAGES, EVENTS = (
    "Cases", "Supporters", "Reviewers", "Resources", "Messages", "Events")

#: Table name -> fields, the first being the primary field. Tables are created in this order,
#: so a link always points at a table made before it.
SCHEMA: dict[str, list[FieldSpec]] = {
    SUPPORTERS: [_text("Name"), FieldSpec("Phone", "phoneNumber"), FieldSpec("Email", "email"),
                 _text("Institution"), _text("Department"), _text("Role"), _text("Specialty"),
                 _check("Active"), FieldSpec("Max Open Cases", "number", {"precision": 0}),
                 _when("Paused Until"), _when("Last Assigned At")],
    REVIEWERS: [_text("Name"), FieldSpec("Phone", "phoneNumber"), FieldSpec("Email", "email"),
                _text("Institution"), _check("On Call"), _check("Program Lead")],
    RESOURCES: [_text("Name"), _text("Institution"), _text("Kind"), FieldSpec("Phone", "phoneNumber"),
                FieldSpec("URL", "url"), _text("Hours")],
    CASES: [_text("Case ID"), _text("Source"), _text("Source Response ID"), _when("Submitted At"),
            _select("Status", STATUSES), _select("Urgency", URGENCIES), _select("For", FOR_CHOICES),
            _text("Requester Name"), FieldSpec("Requester Phone", "phoneNumber"),
            FieldSpec("Requester Email", "email"), _text("Referrer Name"),
            FieldSpec("Referrer Phone", "phoneNumber"), FieldSpec("Referrer Email", "email"),
            _select("Preferred Contact", CONTACT_CHOICES),
            _text("Institution"), _text("Department"), _text("Role"), _text("Specialty"),
            _select("Role Preference", PREFERENCES), _select("Department Preference", PREFERENCES),
            _check("Outside My Institution"), _text("Flyer"), _when("Review Due"),
            _long("Suggested Supporters"), _link("Assigned Supporter", SUPPORTERS),
            _when("Offer Expires"), _when("Contact Made At"), _text("Tier 3 Referral"),
            _when("Closed At"), _when("Survey Sent At"), _when("Purged At"), _long("Problems")],
    MESSAGES: [_text("Key"), _link("Case", CASES), _text("Kind"), _text("Channel"),
               _text("Recipient Role"), _text("Status"), _text("Provider ID"), _when("Sent At"),
               _long("Error")],
    EVENTS: [_text("Event"), _link("Case", CASES), _when("At"), _text("Actor")],
}
SPECS = {table: {spec.name: spec for spec in specs} for table, specs in SCHEMA.items()}
#: Upsert keys: Airtable merges only on text, number, select or date fields, never email/phone.
CASE_KEY = "Source Response ID"
ROSTER_KEYS = ["Name", "Institution"]
MESSAGE_KEY = "Key"


def _to_cell(spec: FieldSpec, value):
    """A Python value as Airtable wants it in that field; None clears the cell."""
    if spec.type == "dateTime":
        return datetime_to_iso_str(value.astimezone(timezone.utc)) if value else None
    if spec.type == "checkbox":
        return bool(value)
    if spec.type == "number":
        return value
    if spec.type == "multipleRecordLinks":
        return [value] if value else []
    return value if value not in (None, "") else None


def _from_cell(spec: FieldSpec, raw):
    """Airtable leaves empty cells out of a record; read them as the SQL store's defaults."""
    if spec.type == "dateTime":
        return datetime_from_iso_str(raw).astimezone(timezone.utc) if raw else None
    if spec.type == "checkbox":
        return bool(raw)
    if spec.type == "number":
        return int(raw) if raw is not None else 0
    if spec.type == "multipleRecordLinks":
        return raw[0] if raw else ""
    return raw if raw is not None else ""


def _fields_of(obj, names: dict, table: str) -> dict:
    specs = SPECS[table]
    return {display: _to_cell(specs[display], getattr(obj, attr)) for attr, display in names.items()}


def _object_from(record: dict, cls, names: dict, table: str):
    specs, cells = SPECS[table], record.get("fields", {})
    values = {attr: _from_cell(specs[display], cells.get(display)) for attr, display in names.items()}
    return cls(**values, record_id=record["id"])


# ---------------------------------------------------------------------------------------------
# Pacing and retries
# ---------------------------------------------------------------------------------------------

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


class ThrottledSession(requests.Session):
    """The HTTP session pyairtable uses, with our pacing and retry policy in place of its own
    (which retries a 429 for about 3 s in all, far short of Airtable's 30 s penalty)."""

    def __init__(self, base_id: str, throttle: Throttle, *, rate_limit_retries: int = RATE_LIMIT_RETRIES,
                 error_retries: int = ERROR_RETRIES):
        super().__init__()
        self.base_id, self.throttle = base_id, throttle
        self.rate_limit_retries, self.error_retries = rate_limit_retries, error_retries

    def request(self, method, url, *args, **kwargs):
        limited = failed = 0
        while True:
            self.throttle.wait(self.base_id)
            try:
                response = super().request(method, url, *args, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if failed < self.error_retries and _may_repeat(method, url, exc):
                    failed += 1
                    self._back_off(failed, type(exc).__name__)
                    continue
                raise
            if response.status_code == 429 and limited < self.rate_limit_retries:
                limited += 1
                response.close()
                log.warning("airtable 429 base=%s: waiting %ss before retry %d",
                            self.base_id, int(RATE_LIMIT_WAIT_SECONDS), limited)
                self.throttle.penalize(self.base_id, RATE_LIMIT_WAIT_SECONDS)
                continue
            if response.status_code in (500, 502, 503, 504) and failed < self.error_retries \
                    and _may_repeat(method, url, None):
                failed += 1
                response.close()
                self._back_off(failed, f"HTTP {response.status_code}")
                continue
            return response

    def _back_off(self, attempt: int, what: str) -> None:
        delay = 2 ** (attempt - 1) * (1 + random.random() / 4)
        log.warning("airtable %s base=%s: retry %d in %.1fs", what, self.base_id, attempt, delay)
        self.throttle.sleep(delay)


def _may_repeat(method: str, url: str, exc: Exception | None) -> bool:
    """Reads and upserts are safe to send twice; a plain create (POST) only when it surely
    never reached Airtable, so an event is not written twice."""
    if method.upper() != "POST" or str(url).split("?", 1)[0].endswith("/listRecords"):
        return True
    return isinstance(exc, requests.ConnectTimeout)


# ---------------------------------------------------------------------------------------------
# The case store
# ---------------------------------------------------------------------------------------------

class AirtableCaseStore:
    """The CaseStore of workflows/model.py on an Airtable base. Keeps SqlCaseStore's behaviour;
    callers that create cases hold the per-case lock (as intake does), because Airtable upserts
    are not atomic between two processes."""

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
    def from_settings(cls, values: dict) -> "AirtableCaseStore":
        from config import settings as settings_module
        from integrations.database import Database
        db = Database(settings_module.database_url(values))
        return cls(values["AIRTABLE_API_KEY"], values["AIRTABLE_BASE_ID"],
                   api_url=values.get("AIRTABLE_API_URL") or "https://api.airtable.com",
                   timeout=float(values.get("OUTSIDE_TIMEOUT_SECONDS") or 10),
                   throttle=Throttle(engine=db.engine))

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

    def create_case(self, case: Case) -> Case:
        """Upsert on Source Response ID; an existing case is returned unchanged."""
        missed = getattr(self._last_miss, "value", None)
        self._last_miss.value = None
        if not (missed and missed[0] == case.source_response_id and self.monotonic() - missed[1] < 5):
            existing = self._find_case_record(source_response_id=case.source_response_id)
            if existing:
                return self._case(existing)
        fields = _fields_of(case, CASE_FIELDS, CASES)
        result = self.table(CASES).batch_upsert([{"fields": fields}], key_fields=[CASE_KEY])
        return self._case(result["records"][0])

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

    # ---- messages ----
    def mirror_messages(self, records: list[MessageRecord]) -> None:
        """Show ledger rows in the Messages table (upsert on Key); no message text."""
        if not records:
            return
        rows = []
        for r in records:
            fields = _fields_of(r, {k: v for k, v in MESSAGE_FIELDS.items() if k != "case_id"}, MESSAGES)
            case_rec = self._case_record_id(r.case_id, required=False)
            fields["Case"] = [case_rec] if case_rec else []
            rows.append({"fields": fields})
        self.table(MESSAGES).batch_upsert(rows, key_fields=[MESSAGE_KEY])


# ---------------------------------------------------------------------------------------------
# Schema: `flask airtable init` and `flask airtable check`
# ---------------------------------------------------------------------------------------------

def _field_json(spec: FieldSpec, tables: dict, time_zone: str) -> dict:
    body: dict = {"name": spec.name, "type": spec.type}
    if spec.type == "dateTime":
        body["options"] = {"dateFormat": {"name": "iso"}, "timeFormat": {"name": "24hour"},
                           "timeZone": time_zone}
    elif spec.type == "multipleRecordLinks":
        body["options"] = {"linkedTableId": tables[spec.link_to]["id"]}
    elif spec.options:
        body["options"] = spec.options
    return body


def _field_problem(table: str, spec: FieldSpec, have: dict, tables: dict) -> str | None:
    where = f"{table}.{spec.name}"
    if have["type"] != spec.type:
        return f"{where} is a {have['type']} field; Peerline needs {spec.type}"
    options = have.get("options") or {}
    if spec.type == "singleSelect":
        missing = [c["name"] for c in spec.options["choices"]
                   if c["name"] not in {x.get("name") for x in options.get("choices", [])}]
        if missing:
            return f"{where} lacks the choices {', '.join(missing)}"
    if spec.type == "multipleRecordLinks":
        target = tables.get(spec.link_to)
        if target and options.get("linkedTableId") != target["id"]:
            return f"{where} links to another table; Peerline needs links to {spec.link_to}"
    return None


def base_tables(store: AirtableCaseStore) -> dict:
    """The base's tables by name, as the Metadata API describes them."""
    data = store.api.get(store.api.base(store.base_id).urls.tables)
    return {t["name"]: t for t in data.get("tables", [])}


def check_base(store: AirtableCaseStore) -> list[str]:
    """What differs from docs/architecture.md section 6: missing tables and fields, wrong types. Fields
    Peerline does not know (coordinators' own) are fine."""
    tables, drift = base_tables(store), []
    for table, specs in SCHEMA.items():
        have = tables.get(table)
        if have is None:
            drift.append(f"missing table {table}")
            continue
        by_name = {f["name"]: f for f in have.get("fields", [])}
        primary = next((f["name"] for f in have.get("fields", []) if f["id"] == have.get("primaryFieldId")), None)
        if primary != specs[0].name:
            drift.append(f"{table}: the primary field is {primary}; Peerline expects {specs[0].name}")
        for spec in specs:
            if spec.name not in by_name:
                drift.append(f"missing field {table}.{spec.name} ({spec.type})")
            elif problem := _field_problem(table, spec, by_name[spec.name], tables):
                drift.append(problem)
    return drift


def init_base(store: AirtableCaseStore, time_zone: str = "utc") -> tuple[list[str], list[str]]:
    """Create the missing tables and fields. Returns (what was created, what could not be)."""
    tables, created, refused = base_tables(store), [], []
    for table, specs in SCHEMA.items():
        have = tables.get(table)
        if have is None:
            fields = [_field_json(s, tables, time_zone) for s in specs]
            tables[table] = store.api.post(store.api.base(store.base_id).urls.tables,
                                           json={"name": table, "fields": fields})
            created.append(f"table {table} ({len(fields)} fields)")
            continue
        by_name = {f["name"]: f for f in have.get("fields", [])}
        for spec in specs:
            if spec.name in by_name:
                if problem := _field_problem(table, spec, by_name[spec.name], tables):
                    refused.append(problem)
                continue
            if spec.link_to and spec.link_to not in tables:
                refused.append(f"{table}.{spec.name}: table {spec.link_to} is missing")
                continue
            url = store.api.table(store.base_id, have["id"]).urls.fields
            have.setdefault("fields", []).append(
                store.api.post(url, json=_field_json(spec, tables, time_zone)))
            created.append(f"field {table}.{spec.name}")
    return created, refused


cli = AppGroup("airtable", help="The Airtable base that holds the cases (docs/architecture.md section 6).")


def _configured_store() -> AirtableCaseStore:
    store = current_app.extensions["peerline"].store
    if not isinstance(store, AirtableCaseStore):
        raise click.ClickException("Airtable is not configured: set AIRTABLE_API_KEY and AIRTABLE_BASE_ID "
                                   "(see .env.example).")
    return store


def _refusal(exc: requests.RequestException,
             scopes: str = "schema.bases:read / schema.bases:write") -> click.ClickException:
    if not isinstance(exc, requests.HTTPError):
        settings = current_app.extensions["peerline"].settings
        return click.ClickException(f"Could not reach Airtable at {settings.get('AIRTABLE_API_URL')} "
                                    f"({type(exc).__name__}); check AIRTABLE_API_URL and the network.")
    status = getattr(exc.response, "status_code", None)
    hint = {401: "the token is wrong or revoked", 403: f"the token lacks a scope "
            f"({scopes}) or access to this base",
            404: "no base with this AIRTABLE_BASE_ID"}.get(status, "see the Airtable API documentation")
    return click.ClickException(f"Airtable refused the request (HTTP {status}): {hint}.")


@cli.command("init")
def init_cmd():
    """Create the missing tables and fields (safe to run again)."""
    store = _configured_store()
    time_zone = current_app.extensions["peerline"].program.program.timezone
    try:
        created, refused = init_base(store, time_zone)
    except requests.RequestException as exc:
        raise _refusal(exc) from None
    for line in created:
        click.echo(f"created {line}")
    if not created:
        click.echo("Nothing to create: the base has every table and field Peerline needs.")
    for line in refused:
        click.echo(f"could not create: {line} (change it in Airtable, then run init again)", err=True)
    if refused:
        raise SystemExit(1)


@cli.command("check")
def check_cmd():
    """Report drift from the expected tables and fields; exit 1 when there is any."""
    store = _configured_store()
    try:
        drift = check_base(store)
    except requests.RequestException as exc:
        raise _refusal(exc) from None
    for line in drift:
        click.echo(line)
    if drift:
        click.echo(f"{len(drift)} difference(s); `flask airtable init` adds what is missing.", err=True)
        raise SystemExit(1)
    click.echo("The base matches: every table and field is in place.")


# ---------------------------------------------------------------------------------------------
# Webhook: POST /webhooks/airtable, and `flask airtable webhook create|list|refresh`
# ---------------------------------------------------------------------------------------------

bp = Blueprint("airtable", __name__)
WEBHOOK_PATH = "/webhooks/airtable"
#: Whose edits ping us: people in the Airtable app and Airtable automations. Our own API
#: writes (publicApi) do not, or every offer we record would ping us back.
WEBHOOK_SOURCES = ["client", "automation"]
WEBHOOK_SCOPES = "webhook:manage and data.records:read, plus schema.bases:read to find the Cases table"


def mac_ok(secret_base64: str | None, body: bytes, header: str) -> bool:
    """X-Airtable-Content-MAC is "hmac-sha256=" + hex HMAC-SHA256 of the raw body, keyed with
    the base64-decoded macSecretBase64; compared in constant time."""
    if not secret_base64 or not header:
        return False
    try:
        key = base64.b64decode(secret_base64, validate=True)
    except (binascii.Error, ValueError):
        log.error("AIRTABLE_WEBHOOK_SECRET is not base64: set it to the macSecretBase64 `flask airtable "
                  "webhook create` printed")
        return False
    expected = "hmac-sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8", "replace"))


class Ping(Webhook):
    """POST /webhooks/airtable: a nudge naming only the base and the webhook; queue the poll."""

    system = "airtable"

    def verify(self, ctx, request) -> None:
        if not mac_ok(ctx.settings.get("AIRTABLE_WEBHOOK_SECRET"), request.get_data(cache=True),
                      request.headers.get("X-Airtable-Content-MAC", "")):
            raise SignatureError("X-Airtable-Content-MAC missing or wrong")

    def parse(self, ctx, request) -> dict:
        ping = parse_json(request.get_data(cache=True), "body")
        for name in ("base", "webhook"):
            part = ping.get(name) if isinstance(ping, dict) else None
            if not isinstance(part, dict) or not isinstance(part.get("id"), str) or not part["id"]:
                raise MalformedPayload(f"{name}.id", "missing")
        if ping["base"]["id"] != ctx.settings.get("AIRTABLE_BASE_ID"):
            return Ignored(f"a ping for another base, webhook={_airtable_id(ping['webhook']['id'])}")
        return ping

    def answer_ignored(self, ignored):
        return "", 200

    def dispatch(self, ctx, ping: dict):
        webhook_id = _airtable_id(ping["webhook"]["id"])
        try:
            ctx.run_soon("poll_approvals")
        except Exception as exc:   # the poll every minute still runs
            log.warning("airtable ping: could not queue the poll (%s); the minute poll will", type(exc).__name__)
        log.info("airtable ping webhook=%s: poll queued", webhook_id)
        return "", 200


Ping.route(bp, WEBHOOK_PATH, endpoint="webhook_ping")


def _airtable_id(value: str) -> str:
    """An Airtable id as it may be logged, else a placeholder."""
    return value if re.fullmatch(r"[a-z]{3}[A-Za-z0-9]{14}", value) else "(not an id)"


def webhook_url(public_base_url: str) -> str:
    return public_base_url.rstrip("/") + WEBHOOK_PATH


def our_webhooks(store: AirtableCaseStore, public_base_url: str) -> list:
    """The base's webhooks that notify this service (pyairtable Webhook objects)."""
    url = webhook_url(public_base_url)
    return [w for w in store.api.base(store.base_id).webhooks() if w.notification_url == url]


def create_webhook(store: AirtableCaseStore, public_base_url: str):
    """Watch the Cases table's Status, edited by people or automations (not by our own API
    writes). Returns pyairtable's CreateWebhookResponse (id, mac_secret_base64, expiration_time)."""
    cases = base_tables(store).get(CASES)
    if cases is None:
        raise LookupError("the base has no Cases table: run `flask airtable init` first")
    status = next((f["id"] for f in cases.get("fields", []) if f["name"] == "Status"), None)
    if status is None:
        raise LookupError("the Cases table has no Status field: run `flask airtable init` first")
    spec = {"options": {"filters": {"dataTypes": ["tableData"], "recordChangeScope": cases["id"],
                                    "watchDataInFieldIds": [status], "fromSources": WEBHOOK_SOURCES}}}
    return store.api.base(store.base_id).add_webhook(webhook_url(public_base_url), spec)


def refresh_webhooks(store: AirtableCaseStore, public_base_url: str) -> list:
    """Extend our webhooks by Airtable's 7 days and turn their notifications back on if Airtable
    turned them off. Safe to run any number of times. Returns the webhooks refreshed."""
    hooks = our_webhooks(store, public_base_url)
    for hook in hooks:
        hook.extend_expiration()
        if not hook.are_notifications_enabled:
            hook.enable_notifications()
            log.warning("airtable webhook=%s had notifications off; turned them on", _airtable_id(hook.id))
        log.info("airtable webhook=%s refreshed", _airtable_id(hook.id))
    if not hooks:
        log.warning("no Airtable webhook notifies %s: approvals wait for the minute poll "
                    "(see `flask airtable webhook create`)", WEBHOOK_PATH)
    return hooks


webhook_cli = AppGroup("webhook", help="The webhook that tells Peerline of approvals at once.")
cli.add_command(webhook_cli)


def _expires(when) -> str:
    """Airtable's expiry (an ISO string in UTC) as the program's people read times (their zone)."""
    try:
        when = datetime_from_iso_str(when) if isinstance(when, str) else when
    except ValueError:
        return when
    return show_time(current_app.extensions["peerline"], when) if isinstance(when, datetime) else str(when or "-")


def _public_base_url() -> str:
    url = current_app.extensions["peerline"].settings["PUBLIC_BASE_URL"]
    if not url.startswith("https://"):
        raise click.ClickException(f"PUBLIC_BASE_URL is {url}: set it to the https address Airtable can "
                                   "reach this service at (Airtable calls PUBLIC_BASE_URL/webhooks/airtable).")
    return url


@webhook_cli.command("create")
@click.option("--replace", is_flag=True, help="Delete this service's existing webhook first.")
def webhook_create_cmd(replace):
    """Register the webhook; prints its secret once (set it as AIRTABLE_WEBHOOK_SECRET)."""
    store, url = _configured_store(), _public_base_url()
    try:
        existing = our_webhooks(store, url)
        if existing and not replace:
            raise click.ClickException(
                f"A webhook already notifies {webhook_url(url)} ({existing[0].id}). Its secret was shown when it "
                "was made; to make a new one (and a new secret), run again with --replace.")
        for hook in existing:
            hook.delete()
            click.echo(f"deleted webhook {hook.id}")
        created = create_webhook(store, url)
    except requests.RequestException as exc:
        raise _refusal(exc, WEBHOOK_SCOPES) from None
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created webhook {created.id}: Airtable will POST to {webhook_url(url)} when a person or an "
               f"automation changes a case's Status (expires {_expires(created.expiration_time)}; the worker refreshes it).")
    click.echo("Set this on every web process (in .env or the platform's settings), then restart them. "
               "Airtable shows it only now:")
    click.echo(f"AIRTABLE_WEBHOOK_SECRET={created.mac_secret_base64}")


@webhook_cli.command("list")
def webhook_list_cmd():
    """The base's webhooks, marking the one that notifies this service."""
    store = _configured_store()
    ours = webhook_url(current_app.extensions["peerline"].settings["PUBLIC_BASE_URL"])
    try:
        hooks = store.api.base(store.base_id).webhooks()
    except requests.RequestException as exc:
        raise _refusal(exc, WEBHOOK_SCOPES) from None
    if not hooks:
        click.echo("The base has no webhooks. `flask airtable webhook create` makes Peerline's.")
    for hook in hooks:
        last = hook.last_notification_result
        click.echo(f"{hook.id}  {'ours ' if hook.notification_url == ours else 'other'}  "
                   f"expires={_expires(hook.expiration_time)}  enabled={hook.is_hook_enabled and hook.are_notifications_enabled}"
                   f"  last_notification={'ok' if last and last.success else ('failed' if last else '-')}"
                   f"  {hook.notification_url or ''}")


@webhook_cli.command("refresh")
def webhook_refresh_cmd():
    """Extend this service's webhook by 7 days now (the worker does it four times a day)."""
    store = _configured_store()
    try:
        hooks = refresh_webhooks(store, current_app.extensions["peerline"].settings["PUBLIC_BASE_URL"])
    except requests.RequestException as exc:
        raise _refusal(exc, WEBHOOK_SCOPES) from None
    if not hooks:
        raise click.ClickException("No webhook notifies this service: run `flask airtable webhook create`.")
    for hook in hooks:
        click.echo(f"refreshed {hook.id}: expires {_expires(hook.expiration_time)}")
