"""A fake Airtable: the part of the REST and Metadata APIs Peerline uses, records in memory.

Used two ways, with the same behaviour:
- in tests through `responses` (`fake.install(mocked, url)`), so pyairtable's real request
  code runs;
- as a real HTTP server on 127.0.0.1 (`with fake.serve() as url:`) for bench/airtable_calls.py
  and bench/airtable_idle.py.

What it keeps of Airtable (its public Web API docs): list with filterByFormula (the formulas
`pyairtable.formulas` emits), pageSize <= 100 / offset paging / maxRecords, the POST
listRecords fallback for long URLs, create, PATCH/PUT of records by id, performUpsert
(1-3 merge fields of mergeable types; zero matches create, one updates, more fail) with
createdRecords/updatedRecords, at most 10 records per write (422 past it), empty cells left
out of records, select choices enforced without typecast, links to existing records only,
Metadata API tables list/create and field create, and webhooks (create, list, refresh, enable
notifications, delete; 7-day expiry, after which Airtable drops them; at most 10 per base;
`ping_body` and `mac` build the notification Airtable POSTs). With `rate_limit` set it refuses a base's
requests past that many per second with 429, and everything for `penalty_seconds` after.
It records every request (base, method, path, time, status) for tests to measure.
CREATED_TIME() and LAST_MODIFIED_TIME() in a formula read when a record was made and last
written, by the fake's `now` (blank for a record never modified since it was made);
`edit_record` is a coordinator's edit in the Airtable app (no API request).
Error bodies follow Airtable's usual `{"error": {"type", "message"}}`; the exact types are
not all confirmed from a primary source, and Peerline's code depends only on the status.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import string
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

MAX_RECORDS_PER_REQUEST = 10
MAX_PAGE_SIZE = 100
MAX_URL_LENGTH = 16000
MERGEABLE_TYPES = {"singleLineText", "multilineText", "number", "singleSelect", "multipleSelects", "date"}
CREATABLE_TYPES = {"barcode", "checkbox", "currency", "date", "dateTime", "duration", "email",
                   "multilineText", "multipleAttachments", "multipleCollaborators", "multipleRecordLinks",
                   "multipleSelects", "number", "percent", "phoneNumber", "rating", "richText",
                   "singleCollaborator", "singleLineText", "singleSelect", "url"}
NOT_PRIMARY_TYPES = {"checkbox", "multipleRecordLinks", "multipleAttachments", "multipleSelects",
                     "multipleCollaborators", "singleCollaborator"}
TEXT_TYPES = {"singleLineText", "multilineText", "email", "phoneNumber", "url", "richText"}
DATE_FORMATS = {"iso": "YYYY-MM-DD", "us": "M/D/YYYY", "european": "D/M/YYYY",
                "friendly": "LL", "local": "l"}
TIME_FORMATS = {"24hour": "HH:mm", "12hour": "h:mma"}


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str = ""):
        super().__init__(message or kind)
        self.status, self.kind, self.message = status, kind, message or kind


class FakeAirtable:
    def __init__(self, *, token: str | None = None, rate_limit: float | None = None,
                 penalty_seconds: float = 30.0, clock=time.monotonic, seed: int = 7):
        self.token = token
        self.rate_limit, self.penalty_seconds, self.clock = rate_limit, penalty_seconds, clock
        self.bases: dict[str, list[dict]] = {}
        self.requests: list[dict] = []
        self._window: dict[str, deque] = {}
        self._blocked_until: dict[str, float] = {}
        self._refusals: dict[str, list[int]] = {}
        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self.webhooks: dict[str, list[dict]] = {}
        #: Deleted records per base (Airtable keeps them in the base's trash for 7 days), each
        #: with its table's name and its revision history.
        self.trash: dict[str, list[dict]] = {}
        self._interleaved: list = []
        self.now = lambda: datetime.now(timezone.utc)       # for webhook expiry; tests may move it

    # ---- set-up and inspection helpers for tests ----
    def add_base(self, base_id: str) -> None:
        self.bases.setdefault(base_id, [])

    def table(self, base_id: str, name_or_id: str) -> dict:
        for t in self.bases[base_id]:
            if name_or_id in (t["id"], t["name"]):
                return t
        raise ApiError(404, "TABLE_NOT_FOUND", f"Could not find table {name_or_id} in this base")

    def records(self, base_id: str, table: str) -> list[dict]:
        """Every record of a table, as the API would return them."""
        with self._lock:
            return [self._public(r) for r in self.table(base_id, table)["records"].values()]

    def revisions(self, base_id: str, table: str) -> list[dict]:
        """Every earlier cell value of the table's live records (Airtable's record revision
        history): one dict of the fields as they were before each change."""
        with self._lock:
            return [json.loads(json.dumps(old)) for r in self.table(base_id, table)["records"].values()
                    for old in r.get("history", [])]

    def refuse_next(self, base_id: str, status: int, count: int = 1) -> None:
        """Answer the next `count` requests to the base with `status` (e.g. 503)."""
        self._refusals.setdefault(base_id, []).extend([status] * count)

    def before_next_write(self, action) -> None:
        """Run `action(fake)` just before the next write request is handled: another writer
        (a second worker, a coordinator pasting a row) acting between our read and our write."""
        self._interleaved.append(action)

    def add_record(self, base_id: str, table: str, fields: dict) -> dict:
        """A row added in Airtable's UI (e.g. a coordinator's copy and paste): no checks."""
        with self._lock:
            return self._public(self._new_record(self.table(base_id, table), dict(fields)))

    def edit_record(self, base_id: str, table: str, record_id: str, fields: dict) -> dict:
        """A coordinator's edit in the Airtable app (no API request is counted): the cells
        change and the record's last modified time moves."""
        with self._lock:
            record = self.table(base_id, table)["records"][record_id]
            self._write(record, dict(fields), replace=False)
            return self._public(record)

    def stop_refusing(self, base_id: str) -> None:
        """Answer normally again (the outage is over)."""
        self._refusals.pop(base_id, None)

    def penalize(self, base_id: str) -> None:
        """Act as if someone else just exceeded the base's rate limit."""
        self._blocked_until[base_id] = self.clock() + self.penalty_seconds

    def times(self, base_id: str, status: int | None = None) -> list[float]:
        return [r["at"] for r in self.requests if r["base"] == base_id
                and (status is None or r["status"] == status)]

    def busiest_second(self, base_id: str, since: int = 0) -> int:
        """The most requests the base received within any 1-second window (counting from
        request number `since`)."""
        times = sorted(r["at"] for r in self.requests[since:] if r["base"] == base_id)
        most, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most

    def set_field(self, base_id: str, table: str, name: str, *, type: str | None = None,
                  options: dict | None = None, delete: bool = False) -> None:
        """Change the schema as a coordinator might in the Airtable UI (drift)."""
        t = self.table(base_id, table)
        field = next(f for f in t["fields"] if f["name"] == name)
        if delete:
            t["fields"].remove(field)
            return
        field["type"] = type or field["type"]
        if options is not None:
            field["options"] = options
        elif type:
            field.pop("options", None)

    # ---- the HTTP surface ----
    def install(self, mocked, base_url: str) -> None:
        """Answer every request under base_url through a `responses` mock."""
        pattern = re.compile(re.escape(base_url.rstrip("/")) + r"/.*")

        def callback(request):
            body = request.body or b""
            status, payload = self.handle(request.method, request.url, request.headers.get("Authorization"),
                                          body if isinstance(body, bytes) else body.encode())
            return status, {"Content-Type": "application/json"}, json.dumps(payload)

        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            mocked.add_callback(method, pattern, callback=callback)

    @contextlib.contextmanager
    def serve(self):
        """Run as an HTTP server on 127.0.0.1 (a free port); yields its base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = f"http://{self.headers.get('Host', 'localhost')}{self.path}"
                status, payload = fake.handle(self.command, url, self.headers.get("Authorization"), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

            def log_message(self, *args):     # quiet
                pass

        with serve_on_loopback(Handler) as url:
            yield url

    def handle(self, method: str, url: str, authorization: str | None, body: bytes) -> tuple[int, dict]:
        """One API request: (HTTP status, JSON answer)."""
        parts = urlsplit(url)
        path = [unquote(p) for p in parts.path.split("/") if p]
        query = parse_qsl(parts.query, keep_blank_values=True)
        if path[1:3] == ["meta", "bases"] and len(path) > 3:
            base_id = path[3]
        elif path[1:2] == ["bases"] and len(path) > 2:
            base_id = path[2]
        else:
            base_id = path[1] if len(path) > 1 else ""
        with self._lock:
            if self._interleaved and method.upper() in ("POST", "PATCH", "PUT") and "listRecords" not in url:
                self._interleaved.pop(0)(self)
            status, payload = self._admit(base_id, authorization, len(url))
            if status == 200:
                try:
                    try:
                        data = json.loads(body) if body else {}
                    except ValueError:
                        raise ApiError(422, "INVALID_REQUEST_BODY", "Could not parse the request body") from None
                    payload = self._route(method.upper(), path, query, data)
                    status = 200
                except ApiError as exc:
                    status = exc.status
                    payload = {"error": {"type": exc.kind, "message": exc.message}}
            self.requests.append({"base": base_id, "method": method.upper(), "path": parts.path,
                                  "at": self.clock(), "status": status})
            return status, payload

    def _admit(self, base_id: str, authorization: str | None, url_length: int) -> tuple[int, dict]:
        if self.token and authorization != f"Bearer {self.token}":
            return 401, {"error": {"type": "AUTHENTICATION_REQUIRED", "message": "Authentication required"}}
        if url_length > MAX_URL_LENGTH:
            return 414, {"error": {"type": "URL_TOO_LONG", "message": "URL too long"}}
        if self._refusals.get(base_id):
            return self._refusals[base_id].pop(0), {"error": {"type": "SERVER_ERROR", "message": "injected"}}
        now = self.clock()
        if self.rate_limit or base_id in self._blocked_until:
            if now < self._blocked_until.get(base_id, float("-inf")):
                return 429, {"errors": [{"error": "RATE_LIMIT_REACHED",
                                         "message": "Rate limit exceeded. Please try again later"}]}
            if self.rate_limit:
                window = self._window.setdefault(base_id, deque())
                while window and now - window[0] >= 1.0:
                    window.popleft()
                if len(window) >= self.rate_limit:
                    self._blocked_until[base_id] = now + self.penalty_seconds
                    return 429, {"errors": [{"error": "RATE_LIMIT_REACHED",
                                             "message": "Rate limit exceeded. Please try again later"}]}
                window.append(now)
        return 200, {}

    def _route(self, method: str, path: list[str], query: list, body: dict) -> dict:
        if len(path) < 2 or path[0] != "v0":
            raise ApiError(404, "NOT_FOUND")
        if path[1] == "meta":
            if len(path) >= 5 and path[2] == "bases" and path[4] == "tables":
                base = self._base(path[3])
                if len(path) == 5 and method == "GET":
                    return {"tables": [self._table_json(t) for t in base]}
                if len(path) == 5 and method == "POST":
                    return self._create_table(path[3], body)
                if len(path) == 7 and path[6] == "fields" and method == "POST":
                    return self._create_field(path[3], self.table(path[3], path[5]), body)
            raise ApiError(404, "NOT_FOUND")
        if path[1] == "bases" and len(path) >= 4 and path[3] == "webhooks":
            return self._webhooks(method, path[2], path[4:], body)
        base_id = path[1]
        self._base(base_id)
        if len(path) < 3:
            raise ApiError(404, "NOT_FOUND")
        table = self.table(base_id, path[2])
        if len(path) == 4 and path[3] == "listRecords" and method == "POST":
            return self._list(base_id, table, body)
        if len(path) == 3:
            if method == "GET":
                return self._list(base_id, table, self._list_params(query))
            if method == "POST":
                return self._create(base_id, table, body)
            if method in ("PATCH", "PUT"):
                return self._update_many(base_id, table, body, replace=method == "PUT")
            if method == "DELETE":
                ids = [v for k, v in query if k == "records[]"]
                if not 1 <= len(ids) <= MAX_RECORDS_PER_REQUEST:
                    raise ApiError(422, "INVALID_RECORDS", "delete takes 1 to 10 records[]")
                if any(i not in table["records"] for i in ids):
                    raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")
                return {"records": [self._delete(base_id, table, i) for i in ids]}
        if len(path) == 4:
            record = table["records"].get(path[3])
            if record is None:
                raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")
            if method == "GET":
                return self._public(record)
            if method in ("PATCH", "PUT"):
                values = self._check_fields(base_id, table, body.get("fields", {}), body.get("typecast", False))
                self._write(record, values, replace=method == "PUT")
                return self._public(record)
            if method == "DELETE":
                return self._delete(base_id, table, path[3])
        raise ApiError(404, "NOT_FOUND")

    def _delete(self, base_id: str, table: dict, record_id: str) -> dict:
        """Move a record to the trash; links to it disappear from other records' cells."""
        record = table["records"].pop(record_id)
        self.trash.setdefault(base_id, []).append({"table": table["name"], **record})
        for other in self.bases[base_id]:
            links = {f["name"] for f in other["fields"] if f["type"] == "multipleRecordLinks"
                     and f["options"]["linkedTableId"] == table["id"]}
            for r in other["records"].values():
                for name in links:
                    if record_id in (r["fields"].get(name) or []):
                        self._write(r, {name: [i for i in r["fields"][name] if i != record_id]}, replace=False)
        return {"id": record_id, "deleted": True}

    def _base(self, base_id: str) -> list[dict]:
        if base_id not in self.bases:
            raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")
        return self.bases[base_id]

    # ---- records ----
    @staticmethod
    def _list_params(query: list) -> dict:
        params = {}
        for key, value in query:
            if key in ("pageSize", "maxRecords"):
                params[key] = int(value)
            elif key in ("filterByFormula", "offset"):
                params[key] = value
            elif key == "returnFieldsByFieldId":
                params[key] = value not in ("0", "false")
            else:
                raise ApiError(422, "INVALID_REQUEST_UNKNOWN", f"the fake does not support {key!r}")
        return params

    def _list(self, base_id: str, table: dict, params: dict) -> dict:
        unknown = set(params) - {"pageSize", "maxRecords", "filterByFormula", "offset", "returnFieldsByFieldId"}
        if unknown:
            raise ApiError(422, "INVALID_REQUEST_UNKNOWN", f"the fake does not support {sorted(unknown)}")
        page_size = params.get("pageSize", MAX_PAGE_SIZE)
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ApiError(422, "INVALID_PAGE_SIZE", "pageSize must be 1 to 100")
        records = list(table["records"].values())
        if params.get("filterByFormula"):
            formula = Formula(params["filterByFormula"])
            records = [r for r in records if formula.matches(lambda name: self._cell_for_formula(base_id, table, r, name),
                                                            r["id"], record=r)]
        if params.get("maxRecords"):
            records = records[:params["maxRecords"]]
        start = int(params["offset"][3:].split("/")[0]) if params.get("offset") else 0
        page = records[start:start + page_size]
        answer = {"records": [self._public(r) for r in page]}
        if start + page_size < len(records):
            answer["offset"] = f"itr{start + page_size}/{page[-1]['id']}"
        return answer

    def _create(self, base_id: str, table: dict, body: dict) -> dict:
        typecast = body.get("typecast", False)
        if "records" not in body:
            values = self._check_fields(base_id, table, body.get("fields", {}), typecast)
            return self._public(self._new_record(table, values))
        self._check_batch(body["records"])
        checked = [self._check_fields(base_id, table, r.get("fields", {}), typecast) for r in body["records"]]
        return {"records": [self._public(self._new_record(table, v)) for v in checked]}

    def _update_many(self, base_id: str, table: dict, body: dict, *, replace: bool) -> dict:
        records, typecast = body.get("records", []), body.get("typecast", False)
        self._check_batch(records)
        merge_on = (body.get("performUpsert") or {}).get("fieldsToMergeOn")
        if merge_on is not None:
            fields = {f["name"]: f for f in table["fields"]}
            if not 1 <= len(merge_on) <= 3:
                raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "fieldsToMergeOn takes 1 to 3 fields")
            for name in merge_on:
                if name not in fields:
                    raise ApiError(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')
                if fields[name]["type"] not in MERGEABLE_TYPES:
                    raise ApiError(422, "INVALID_REQUEST_UNKNOWN", f"{name} cannot be a merge field")
        # Decide every record's target before changing anything: a failed request changes nothing.
        plan, new_keys = [], []
        for r in records:
            values = self._check_fields(base_id, table, r.get("fields", {}), typecast)
            if "id" in r:
                if r["id"] not in table["records"]:
                    raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")
                plan.append((r["id"], values))
                continue
            if merge_on is None:
                raise ApiError(422, "INVALID_RECORDS", "a record to update needs an id")
            key = tuple(_comparable(values.get(n)) for n in merge_on)
            if any(k in ("", None) for k in key):
                raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "every merge field needs a value")
            matches = [rid for rid, rec in table["records"].items()
                       if tuple(_comparable(rec["fields"].get(n)) for n in merge_on) == key]
            if len(matches) > 1:
                # The type and wording Airtable uses here are UNCONFIRMED (tests/fixtures/README.md).
                raise ApiError(422, "INVALID_REQUEST_UNKNOWN",
                               "Multiple matches found for fieldsToMergeOn; upsert needs at most one")
            if matches:
                plan.append((matches[0], values))
            elif key in new_keys:                       # the same new key twice in one request
                plan.append((("new", new_keys.index(key)), values))
            else:
                new_keys.append(key)
                plan.append((("new", len(new_keys) - 1), values))
        created_ids, updated_ids, out, made = [], [], [], {}
        for target, values in plan:
            if isinstance(target, tuple):
                if target not in made:
                    made[target] = self._new_record(table, values)
                    created_ids.append(made[target]["id"])
                    out.append(made[target])
                    continue
                record = made[target]
            else:
                record = table["records"][target]
                if record["id"] not in updated_ids and record["id"] not in created_ids:
                    updated_ids.append(record["id"])
            self._write(record, values, replace=replace)
            out.append(record)
        answer = {"records": [self._public(r) for r in out]}
        if merge_on is not None:
            answer.update(createdRecords=created_ids, updatedRecords=updated_ids)
        return answer

    @staticmethod
    def _check_batch(records) -> None:
        if not isinstance(records, list) or not records:
            raise ApiError(422, "INVALID_RECORDS", "records must be a non-empty array")
        if len(records) > MAX_RECORDS_PER_REQUEST:
            raise ApiError(422, "INVALID_RECORDS", "You can only create or update up to 10 records per request")

    def _check_fields(self, base_id: str, table: dict, values: dict, typecast: bool) -> dict:
        by_name = {f["name"]: f for f in table["fields"]}
        by_name.update({f["id"]: f for f in table["fields"]})
        checked = {}
        for name, value in values.items():
            field = by_name.get(name)
            if field is None:
                raise ApiError(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')
            checked[field["name"]] = self._check_value(base_id, field, value, typecast)
        return checked

    def _check_value(self, base_id: str, field: dict, value, typecast: bool):
        kind, bad = field["type"], ApiError(422, "INVALID_VALUE_FOR_COLUMN",
                                            f'Field "{field["name"]}" cannot accept the provided value')
        if value is None:
            return None
        if kind in TEXT_TYPES:
            if not isinstance(value, str):
                raise bad
            return value
        if kind == "singleSelect":
            if not isinstance(value, str):
                raise bad
            choices = field["options"]["choices"]
            if value and value not in {c["name"] for c in choices}:
                if not typecast:
                    raise ApiError(422, "INVALID_MULTIPLE_CHOICE_OPTIONS",
                                   f'Insufficient permissions to create new select option ""{value}""')
                choices.append({"id": self._id("sel"), "name": value, "color": "grayLight2"})
            return value
        if kind == "checkbox":
            if not isinstance(value, bool):
                raise bad
            return value
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            return value
        if kind == "dateTime":
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except (AttributeError, ValueError):
                raise bad from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            return parsed.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if kind == "multipleRecordLinks":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad
            linked = self.table(base_id, field["options"]["linkedTableId"])
            for rec_id in value:
                if rec_id not in linked["records"]:
                    raise ApiError(422, "ROW_DOES_NOT_EXIST", f"Record ID {rec_id} does not exist")
            return list(value)
        return value

    def _new_record(self, table: dict, values: dict) -> dict:
        record = {"id": self._id("rec"), "createdTime": _iso(self.now()), "fields": {}}
        self._write(record, values, replace=True)
        del record["modifiedTime"]          # never modified since it was made
        table["records"][record["id"]] = record
        return record

    def _write(self, record: dict, values: dict, *, replace: bool) -> None:
        record["modifiedTime"] = _iso(self.now())        # what LAST_MODIFIED_TIME() reads
        if record.get("fields"):
            record.setdefault("history", []).append(json.loads(json.dumps(record["fields"])))
        if replace:
            record["fields"] = {}
        for name, value in values.items():
            if value in (None, "", False, []):
                record["fields"].pop(name, None)     # Airtable leaves empty cells out
            else:
                record["fields"][name] = value

    @staticmethod
    def _public(record: dict) -> dict:
        return json.loads(json.dumps({"id": record["id"], "createdTime": record["createdTime"],
                                      "fields": record["fields"]}))

    def _cell_for_formula(self, base_id: str, table: dict, record: dict, name: str):
        field = next((f for f in table["fields"] if f["name"] == name), None)
        if field is None:
            raise ApiError(422, "INVALID_FILTER_BY_FORMULA", f"Unknown field names: {name.lower()}")
        value = record["fields"].get(name)
        if field["type"] == "multipleRecordLinks":
            linked = self.table(base_id, field["options"]["linkedTableId"])
            primary = next(f["name"] for f in linked["fields"] if f["id"] == linked["primaryFieldId"])
            return Linked([linked["records"][r]["fields"].get(primary, "") for r in value or []
                           if r in linked["records"]])
        if field["type"] == "checkbox":
            return bool(value)
        return "" if value is None else value

    # ---- webhooks ----
    WEBHOOK_LIFETIME_DAYS = 7
    MAX_WEBHOOKS_PER_BASE = 10

    def _webhooks(self, method: str, base_id: str, rest: list[str], body: dict) -> dict:
        self._base(base_id)
        hooks = self.webhooks.setdefault(base_id, [])
        now = self.now()
        hooks[:] = [h for h in hooks if datetime.fromisoformat(h["expirationTime"].replace("Z", "+00:00")) > now]
        if not rest:
            if method == "GET":
                return {"webhooks": [self._webhook_json(h) for h in hooks]}
            if method == "POST":
                return self._create_webhook(base_id, hooks, body)
            raise ApiError(404, "NOT_FOUND")
        hook = next((h for h in hooks if h["id"] == rest[0]), None)
        if hook is None:
            raise ApiError(404, "NOT_FOUND", "Could not find what you are looking for")
        if len(rest) == 1 and method == "DELETE":
            hooks.remove(hook)
            return {}
        if rest[1:] == ["refresh"] and method == "POST":
            hook["expirationTime"] = _iso(now + timedelta(days=self.WEBHOOK_LIFETIME_DAYS))
            return {"expirationTime": hook["expirationTime"]}
        if rest[1:] == ["enableNotifications"] and method == "POST":
            if not isinstance(body.get("enable"), bool):
                raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "enable must be true or false")
            hook["areNotificationsEnabled"] = body["enable"]
            return {}
        raise ApiError(404, "NOT_FOUND")

    def _create_webhook(self, base_id: str, hooks: list, body: dict) -> dict:
        if len(hooks) >= self.MAX_WEBHOOKS_PER_BASE:
            raise ApiError(422, "TOO_MANY_WEBHOOKS", "This base has the most webhooks it may have")
        filters = ((body.get("specification") or {}).get("options") or {}).get("filters") or {}
        kinds = filters.get("dataTypes")
        if not kinds or not set(kinds) <= {"tableData", "tableFields", "tableMetadata"}:
            raise ApiError(422, "INVALID_WEBHOOK_SPECIFICATION", "filters.dataTypes is required")
        if not isinstance(body.get("notificationUrl"), str):
            raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "notificationUrl must be a URL")
        scope = filters.get("recordChangeScope")
        if scope is not None:
            table = self.table(base_id, scope)
            unknown = set(filters.get("watchDataInFieldIds") or []) - {f["id"] for f in table["fields"]}
            if unknown:
                raise ApiError(422, "INVALID_WEBHOOK_SPECIFICATION", f"unknown field ids {sorted(unknown)}")
        secret = base64.b64encode(bytes(self._random.getrandbits(8) for _ in range(32))).decode()
        hook = {"id": self._id("ach"), "macSecretBase64": secret, "areNotificationsEnabled": True,
                "cursorForNextPayload": 1, "isHookEnabled": True, "lastSuccessfulNotificationTime": None,
                "notificationUrl": body["notificationUrl"], "lastNotificationResult": None,
                "expirationTime": _iso(self.now() + timedelta(days=self.WEBHOOK_LIFETIME_DAYS)),
                "specification": json.loads(json.dumps(body["specification"]))}
        hooks.append(hook)
        return {"id": hook["id"], "macSecretBase64": secret, "expirationTime": hook["expirationTime"]}

    @staticmethod
    def _webhook_json(hook: dict) -> dict:
        return json.loads(json.dumps({k: v for k, v in hook.items() if k != "macSecretBase64"}))

    def ping_body(self, base_id: str, webhook_id: str) -> bytes:
        """The notification Airtable POSTs when a watched change happens: ids only."""
        return json.dumps({"base": {"id": base_id}, "webhook": {"id": webhook_id},
                           "timestamp": _iso(self.now())}, separators=(",", ":")).encode()

    def mac(self, base_id: str, webhook_id: str, body: bytes) -> str:
        """X-Airtable-Content-MAC for `body`, keyed with the webhook's decoded secret."""
        hook = next(h for h in self.webhooks[base_id] if h["id"] == webhook_id)
        key = base64.b64decode(hook["macSecretBase64"])
        return "hmac-sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()

    # ---- metadata ----
    def _create_table(self, base_id: str, body: dict) -> dict:
        name, fields = body.get("name"), body.get("fields") or []
        if not name or any(t["name"] == name for t in self.bases[base_id]):
            raise ApiError(422, "DUPLICATE_TABLE_NAME", f"Table name {name!r} is empty or already used")
        if not fields:
            raise ApiError(422, "INVALID_REQUEST_UNKNOWN", "a table needs at least one field")
        if fields[0].get("type") in NOT_PRIMARY_TYPES:
            raise ApiError(422, "INVALID_PRIMARY_FIELD", f"{fields[0].get('type')} cannot be a primary field")
        table = {"id": self._id("tbl"), "name": name, "fields": [], "records": {},
                 "views": [{"id": self._id("viw"), "name": "Grid view", "type": "grid"}]}
        if body.get("description"):
            table["description"] = body["description"]
        self.bases[base_id].append(table)
        try:
            for spec in fields:
                self._create_field(base_id, table, spec)
        except ApiError:
            self.bases[base_id].remove(table)
            raise
        table["primaryFieldId"] = table["fields"][0]["id"]
        return self._table_json(table)

    def _create_field(self, base_id: str, table: dict, spec: dict) -> dict:
        name, kind, options = spec.get("name"), spec.get("type"), spec.get("options")
        if not name or any(f["name"] == name for f in table["fields"]):
            raise ApiError(422, "DUPLICATE_OR_EMPTY_FIELD_NAME", f"Field name {name!r} is empty or already used")
        if kind not in CREATABLE_TYPES:
            raise ApiError(422, "UNSUPPORTED_FIELD_TYPE_FOR_CREATE", f"cannot create a {kind} field")
        field = {"id": self._id("fld"), "name": name, "type": kind}
        if spec.get("description"):
            field["description"] = spec["description"]
        if kind in ("singleSelect", "multipleSelects"):
            field["options"] = {"choices": [{"id": self._id("sel"), "name": c["name"],
                                             "color": c.get("color", "blueLight2")}
                                            for c in (options or {}).get("choices", [])]}
        elif kind == "checkbox":
            if not options or not options.get("icon") or not options.get("color"):
                raise ApiError(422, "INVALID_FIELD_OPTIONS", "checkbox needs options.icon and options.color")
            field["options"] = {"icon": options["icon"], "color": options["color"]}
        elif kind == "number":
            if not options or "precision" not in options:
                raise ApiError(422, "INVALID_FIELD_OPTIONS", "number needs options.precision")
            field["options"] = {"precision": options["precision"]}
        elif kind == "dateTime":
            try:
                date_name = options["dateFormat"]["name"]
                time_name = options["timeFormat"]["name"]
                zone = options["timeZone"]
            except (KeyError, TypeError):
                raise ApiError(422, "INVALID_FIELD_OPTIONS",
                               "dateTime needs options.dateFormat, timeFormat and timeZone") from None
            if date_name not in DATE_FORMATS or time_name not in TIME_FORMATS:
                raise ApiError(422, "INVALID_FIELD_OPTIONS", "unknown date or time format")
            field["options"] = {"dateFormat": {"name": date_name, "format": DATE_FORMATS[date_name]},
                                "timeFormat": {"name": time_name, "format": TIME_FORMATS[time_name]},
                                "timeZone": zone}
        elif kind == "multipleRecordLinks":
            linked = (options or {}).get("linkedTableId")
            if not any(t["id"] == linked for t in self.bases[base_id]):
                raise ApiError(422, "INVALID_FIELD_OPTIONS", "linkedTableId must name a table of this base")
            field["options"] = {"linkedTableId": linked, "isReversed": False,
                                "prefersSingleRecordLink": False}
        elif options:
            field["options"] = options
        table["fields"].append(field)
        return json.loads(json.dumps(field))

    @staticmethod
    def _table_json(table: dict) -> dict:
        out = {k: table[k] for k in ("id", "name", "primaryFieldId", "fields", "views") if k in table}
        if table.get("description"):
            out["description"] = table["description"]
        return json.loads(json.dumps(out))

    def _id(self, prefix: str) -> str:
        return prefix + "".join(self._random.choices(string.ascii_letters + string.digits, k=14))


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _comparable(value):
    return "" if value is None else value


# ---------------------------------------------------------------------------------------------
# A small formula evaluator: what pyairtable.formulas emits for Peerline's lookups
# ---------------------------------------------------------------------------------------------

class Linked(list):
    """A link field's value in a formula: its records' primary values; as text, joined by ", "."""

    def __str__(self):
        return ", ".join(str(v) for v in self)


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")
    | (?P<field>\{(?:\\.|[^}\\])*\})
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>!=|>=|<=|=|>|<|&|\(|\)|,)
    )""", re.VERBOSE | re.DOTALL)


class Formula:
    """Parses a filterByFormula expression; `matches(cell, record_id)` evaluates it."""

    FUNCTIONS = {"AND", "OR", "NOT", "TRUE", "FALSE", "BLANK", "ARRAYJOIN", "RECORD_ID", "LOWER", "LEN", "IF",
                 "IS_AFTER", "DATETIME_PARSE", "CREATED_TIME", "LAST_MODIFIED_TIME"}

    def __init__(self, text: str):
        self.tokens, pos = [], 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ApiError(422, "INVALID_FILTER_BY_FORMULA", "The formula for filtering records is invalid")
            kind = m.lastgroup
            raw = m.group(kind)
            if kind == "string":
                self.tokens.append(("str", re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.DOTALL)))
            elif kind == "field":
                self.tokens.append(("field", re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.DOTALL)))
            elif kind == "number":
                self.tokens.append(("num", float(raw) if "." in raw else int(raw)))
            else:
                self.tokens.append((kind, raw))
            pos = m.end()
        self.i = 0
        self.tree = self._comparison()
        if self.i != len(self.tokens):
            raise ApiError(422, "INVALID_FILTER_BY_FORMULA", "The formula for filtering records is invalid")

    def matches(self, cell, record_id: str, record: dict | None = None) -> bool:
        self.record = record or {}
        return _truthy(self._eval(self.tree, cell, record_id))

    # parser: comparison := concat (op concat)?; concat := primary ('&' primary)*
    def _peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def _take(self, kind=None, value=None):
        token = self._peek()
        if token[0] is None or (kind and token[0] != kind) or (value and token[1] != value):
            raise ApiError(422, "INVALID_FILTER_BY_FORMULA", "The formula for filtering records is invalid")
        self.i += 1
        return token

    def _comparison(self):
        left = self._concat()
        kind, value = self._peek()
        if kind == "op" and value in ("=", "!=", ">", "<", ">=", "<="):
            self.i += 1
            return ("cmp", value, left, self._concat())
        return left

    def _concat(self):
        node = self._primary()
        while self._peek() == ("op", "&"):
            self.i += 1
            node = ("concat", node, self._primary())
        return node

    def _primary(self):
        kind, value = self._take()
        if kind in ("str", "num"):
            return ("lit", value)
        if kind == "field":
            return ("field", value)
        if kind == "op" and value == "(":
            node = self._comparison()
            self._take("op", ")")
            return node
        if kind == "name":
            name = value.upper()
            if name not in self.FUNCTIONS:
                raise ApiError(422, "INVALID_FILTER_BY_FORMULA", f"Unknown function {value}")
            self._take("op", "(")
            args = []
            if self._peek() != ("op", ")"):
                args.append(self._comparison())
                while self._peek() == ("op", ","):
                    self.i += 1
                    args.append(self._comparison())
            self._take("op", ")")
            return ("call", name, args)
        raise ApiError(422, "INVALID_FILTER_BY_FORMULA", "The formula for filtering records is invalid")

    def _eval(self, node, cell, record_id):
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "field":
            return cell(node[1])
        if kind == "concat":
            return _text(self._eval(node[1], cell, record_id)) + _text(self._eval(node[2], cell, record_id))
        if kind == "cmp":
            op, a, b = node[1], self._eval(node[2], cell, record_id), self._eval(node[3], cell, record_id)
            if isinstance(a, (Linked, list)) or isinstance(b, (Linked, list)):
                a, b = _text(a), _text(b)
            if isinstance(a, bool) or isinstance(b, bool):
                a, b = int(bool(a)), int(bool(b))
            if op == "=":
                return a == b
            if op == "!=":
                return a != b
            if isinstance(a, str) != isinstance(b, str):
                a, b = _text(a), _text(b)
            return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
        name, args = node[1], [self._eval(a, cell, record_id) for a in node[2]]
        if name == "AND":
            return all(_truthy(a) for a in args)
        if name == "OR":
            return any(_truthy(a) for a in args)
        if name == "NOT":
            return not _truthy(args[0])
        if name in ("TRUE", "FALSE"):
            return name == "TRUE"
        if name == "BLANK":
            return ""
        if name == "RECORD_ID":
            return record_id
        if name == "LOWER":
            return _text(args[0]).lower()
        if name == "IF":
            return args[1] if _truthy(args[0]) else (args[2] if len(args) > 2 else "")
        if name == "DATETIME_PARSE":
            return _parse_time(args[0])
        if name in ("CREATED_TIME", "LAST_MODIFIED_TIME"):
            # A record never modified since it was made has no last modified time here.
            value = self.record.get("createdTime" if name == "CREATED_TIME" else "modifiedTime")
            return _parse_time(value) if value else ""
        if name == "IS_AFTER":
            return isinstance(args[0], datetime) and isinstance(args[1], datetime) and args[0] > args[1]
        if name == "LEN":
            return len(_text(args[0]))
        # ARRAYJOIN(values, [separator])
        separator = _text(args[1]) if len(args) > 1 else ", "
        values = args[0] if isinstance(args[0], list) else [args[0]]
        return separator.join(_text(v) for v in values)


def _parse_time(text) -> datetime | str:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return ""


def _text(value) -> str:
    if isinstance(value, Linked):
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def _truthy(value) -> bool:
    return bool(value)


@contextlib.contextmanager
def serve_on_loopback(handler_class):
    """An HTTP server on 127.0.0.1 (a free port) answering with `handler_class` in threads, for
    as long as the block runs; yields its base URL. Shared by the fakes of tests and benchmarks."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
