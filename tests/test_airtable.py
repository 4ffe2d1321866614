"""The Airtable case store beyond the shared contract: pacing, 429s, retries, timeouts, the
`airtable init|check` commands, the full intake path on Airtable, and the fake's fidelity."""
from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time

import pytest
import requests
from pyairtable.formulas import EQ, Field, FunctionCall, match
from pyairtable.models.schema import BaseSchema

from integrations import airtable, database
from integrations.airtable import schema
from tests.fake_airtable import FakeAirtable, Formula, Linked
from tests.test_intake import GOOD, get_form
from tests.test_store_contract import NASTY, T0, a_case
from workflows import intake
from workflows.model import (CASE_FIELDS, MESSAGE_FIELDS, Case, Event, Flyer, MessageRecord, Resource, Reviewer, Roster,
                             Supporter, field_names, shown, shown_fields)

URL = "https://api.airtable.test"
BASE = "appTest000000001"
TOKEN = "patTest.secret"


class FakeClock:
    """Time that passes only when someone sleeps."""

    def __init__(self, start: float = 1_000_000.0):
        self.t, self.slept = start, []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture
def fake(mocked):
    fake = FakeAirtable(token=TOKEN)
    fake.add_base(BASE)
    fake.install(mocked, URL)
    return fake


def make_store(throttle=None, **kwargs) -> airtable.AirtableCaseStore:
    return airtable.AirtableCaseStore(TOKEN, BASE, api_url=URL, throttle=throttle or airtable.Throttle(0), **kwargs)


@pytest.fixture
def base(fake):
    """The fake base with Peerline's tables (made by init, unthrottled for speed)."""
    airtable.init_base(make_store())
    return fake



# ---- each field declared once (workflows/model.py), the base's tables derived from it ----

def test_every_field_of_the_model_is_a_field_of_the_base_and_every_field_of_the_base_is_one():
    assert set(schema.TABLES) == {Case, Supporter, Reviewer, Resource, MessageRecord, Event, Flyer}
    for cls, table in schema.TABLES.items():
        attrs = {f.name for f in dataclasses.fields(cls)} - {"record_id"}
        names = field_names(cls)
        assert set(names) == attrs, cls.__name__
        assert [s.name for s in airtable.SCHEMA[table]] == list(names.values())
        assert len(set(names.values())) == len(names), f"{table}: two fields share a name"
        primary = [attr for attr, s in shown_fields(cls).items() if s.primary]
        assert len(primary) == 1 and airtable.SCHEMA[table][0].name == names[primary[0]]
    assert CASE_FIELDS == field_names(Case) and MESSAGE_FIELDS == field_names(MessageRecord)


def test_a_field_added_without_saying_how_it_shows_is_refused():
    Undeclared = dataclasses.make_dataclass("Undeclared", [("name", str, shown("Name", primary=True)),
                                                          ("note", str, "")])
    with pytest.raises(TypeError, match="Undeclared.note"):
        shown_fields(Undeclared)
    with pytest.raises(ValueError, match="unknown kind"):
        shown("Colour", "colour")

# ---- formulas: what the store sends, and that the fake reads it as Airtable would ----

def test_fake_evaluates_the_formulas_the_store_builds_exactly():
    for text in NASTY + ["", "plain"]:
        formula = Formula(str(match({"Source Response ID": text})))
        assert formula.matches(lambda name: text, "rec1")
        for other in NASTY + ["x", text + " ", text[:-1]]:
            if other != text:
                assert not formula.matches(lambda name, other=other: other, "rec1")
    both = Formula(str(match({"Name": "O'Brien", "Institution": "RRMC"})))
    assert both.matches({"Name": "O'Brien", "Institution": "RRMC"}.get, "rec1")
    assert not both.matches({"Name": "O'Brien", "Institution": "NCH"}.get, "rec1")
    linked = Formula(str(EQ(FunctionCall("ARRAYJOIN", Field("Case")), "PS-'}\",TRUE())")))
    assert linked.matches(lambda name: Linked(["PS-'}\",TRUE())"]), "rec1")
    assert not linked.matches(lambda name: Linked(["PS-1001"]), "rec1")
    assert str(match({"Source Response ID": "a'b"})) == "{Source Response ID}='a\\'b'"


def test_a_pasted_formula_would_have_matched_everything_and_ours_does_not(base):
    store = make_store()
    for n in (1, 2):
        store.create_case(a_case(n))
    injected = "x', TRUE(), 'y"          # pasted into OR({...}='...') it matches every record
    pasted = Formula("OR({Source Response ID}='" + injected + "')")
    assert pasted.matches(lambda name: "web:1", "rec1")      # the fake reads a pasted formula faithfully
    assert store.find_case(source_response_id=injected) is None


def test_a_lookup_longer_than_a_url_goes_by_post_and_still_matches_exactly(base):
    store = make_store()
    long_key = NASTY[-1]
    store.create_case(a_case(1, source_response_id=long_key))
    store.create_case(a_case(2, source_response_id=long_key[:-1]))
    assert store.find_case(source_response_id=long_key).case_id == "PS-1001"
    assert any(r["method"] == "POST" and r["path"].endswith("/Cases/listRecords") for r in base.requests)


# ---- pacing ----

def test_a_burst_from_two_processes_stays_within_five_requests_a_second(fake, tmp_path):
    """Two stores with their own throttles sharing only the database (as two worker processes
    would), each with three threads: the fake's clock sees no second with more than five."""
    airtable.init_base(make_store())
    fake.rate_limit = 5
    db = database.Database(f"sqlite:///{tmp_path / 'shared.db'}")
    stores = [make_store(airtable.Throttle(engine=db.engine)) for _ in range(2)]
    errors = []

    def lookups(store, n):
        try:
            for i in range(3):
                store.find_case(source_response_id=f"web:{n}:{i}")
        except Exception as exc:  # pragma: no cover - shown by the assertion below
            errors.append(exc)

    start = len(fake.requests)
    threads = [threading.Thread(target=lookups, args=(s, n)) for n, s in enumerate(stores * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(fake.requests) - start == 18
    assert fake.times(BASE, status=429) == []
    assert fake.busiest_second(BASE, since=start) <= 5
    database.dispose_engines()



def test_processes_built_from_the_same_settings_keep_one_pace(fake, ctx):
    """What `build_context` gives a web and a worker process (the `overrides` below configure
    Airtable): their stores pace themselves through the shared database, not each on its own."""
    from integrations import build_context
    airtable.init_base(make_store())
    fake.rate_limit = 5
    stores = [ctx.store, build_context(ctx.settings, clock=ctx.clock).store]
    assert all(isinstance(s, airtable.AirtableCaseStore) for s in stores)
    start = len(fake.requests)
    threads = [threading.Thread(target=lambda s=s, n=n: [s.find_case(source_response_id=f"web:{n}:{i}")
                                                        for i in range(4)])
               for n, s in enumerate(stores * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.requests) - start == 16
    assert fake.times(BASE, status=429) == []
    assert fake.busiest_second(BASE, since=start) <= 5

@pytest.mark.parametrize("shared_by", ["sqlite", "postgresql"])
def test_requests_that_leave_late_still_arrive_at_most_five_in_any_second(fake, tmp_path, request, shared_by):
    """On a busy machine a request can leave long after its turn (its thread descheduled):
    here each one reaches the fake after a delay of 0 to 0.6 s. Two processes' throttles,
    three threads each: Airtable still never sees more than five in one second."""
    airtable.init_base(make_store())
    fake.rate_limit = 5
    delays = iter([0.0, 0.6, 0.05, 0.3, 0.0, 0.45, 0.1, 0.0, 0.55] * 4)
    handle, order = fake.handle, threading.Lock()

    def late(*args):
        with order:
            delay = next(delays)
        time.sleep(delay)               # between leaving our throttle and arriving
        return handle(*args)

    fake.handle = late
    url = f"sqlite:///{tmp_path / 'shared.db'}" if shared_by == "sqlite" else request.getfixturevalue("pg_url")
    db = database.Database(url)
    stores = [make_store(airtable.Throttle(engine=db.engine)) for _ in range(2)]
    start = len(fake.requests)
    threads = [threading.Thread(target=lambda s=s, n=n: [s.find_case(source_response_id=f"web:{n}:{i}")
                                                        for i in range(5)])
               for n, s in enumerate(stores * 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.requests) - start == 30
    assert fake.times(BASE, status=429) == []
    assert fake.busiest_second(BASE, since=start) <= 5
    database.dispose_engines()


def test_places_held_by_a_worker_killed_mid_request_free_up_within_a_minute():
    clock = FakeClock()
    throttle = airtable.Throttle(clock=clock.now, sleep=clock.sleep)
    killed = [throttle.request(BASE) for _ in range(airtable.REQUESTS_PER_SECOND)]
    for request in killed:
        request.__enter__()                     # and never left: no answer ever came back
    started = clock.now()
    with throttle.request(BASE):
        assert 60 <= clock.now() - started < 61


def test_a_429_is_waited_out_for_30_seconds_then_the_call_succeeds(base, tmp_path):
    clock = FakeClock()
    base.clock = clock.now
    db = database.Database(f"sqlite:///{tmp_path / 'shared.db'}")
    store = make_store(airtable.Throttle(engine=db.engine, clock=clock.now, sleep=clock.sleep))
    base.penalize(BASE)          # another client of the base just went over the limit
    started = clock.now()
    assert store.find_case(case_id="PS-1001") is None
    [refused] = base.times(BASE, status=429)
    assert refused == started
    assert base.times(BASE, status=200)[-1] - refused >= 30
    assert clock.now() - started >= 30
    database.dispose_engines()


def test_429s_that_do_not_stop_are_handed_to_the_inbox_retry(base):
    clock = FakeClock()
    store = make_store(airtable.Throttle(0, clock=clock.now, sleep=clock.sleep))
    base.refuse_next(BASE, 429, count=airtable.RETRIES + 1)
    with pytest.raises(requests.HTTPError) as caught:
        store.find_case(case_id="PS-1001")
    assert intake.describe_error(caught.value) == "HTTPError (HTTP 429)"
    assert clock.now() - 1_000_000.0 >= 30 * airtable.RETRIES


def test_server_errors_on_reads_and_upserts_are_retried_with_backoff(base):
    clock = FakeClock()
    store = make_store(airtable.Throttle(0, clock=clock.now, sleep=clock.sleep))
    base.refuse_next(BASE, 503, count=2)
    assert store.create_case(a_case(1)).case_id == "PS-1001"
    assert len(clock.slept) == 2 and 1 <= clock.slept[0] < clock.slept[1]
    base.refuse_next(BASE, 502, count=airtable.RETRIES + 1)
    with pytest.raises(requests.HTTPError) as caught:
        store.find_case(case_id="PS-1001")
    assert caught.value.response.status_code == 502


def test_a_failed_create_is_not_sent_twice(base):
    store = make_store()
    store.create_case(a_case(1))
    base.refuse_next(BASE, 500)
    with pytest.raises(requests.HTTPError):
        store.add_events([Event("PS-1001", "Case created", at=T0)])
    assert base.records(BASE, "Events") == []
    store.add_events([Event("PS-1001", "Case created", at=T0)])
    assert len(base.records(BASE, "Events")) == 1



def test_a_create_refused_with_429_is_sent_again_once_the_wait_is_over(base):
    clock = FakeClock()
    store = make_store(airtable.Throttle(0, clock=clock.now, sleep=clock.sleep))
    store.create_case(a_case(1))
    base.refuse_next(BASE, 429)          # refused: Airtable did nothing, so a POST may go again
    store.add_events([Event("PS-1001", "Case created", at=T0)])
    assert len(base.records(BASE, "Events")) == 1
    assert clock.slept == [30.0]

@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", held
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_every_call_has_the_configured_timeout(silent_server, tmp_path):
    url, held = silent_server
    store = airtable.AirtableCaseStore.from_settings({
        "AIRTABLE_API_KEY": TOKEN, "AIRTABLE_BASE_ID": BASE, "AIRTABLE_API_URL": url,
        "OUTSIDE_TIMEOUT_SECONDS": "0.2", "DATA_DIR": str(tmp_path), "DATABASE_URL": None})
    clock = FakeClock()
    store.throttle.sleep = clock.sleep          # skip the backoff, not the timeouts
    began = time.monotonic()
    with pytest.raises(requests.Timeout):
        store.find_case(case_id="PS-1001")
    assert time.monotonic() - began < 5
    assert len(held) == airtable.RETRIES + 1
    database.dispose_engines()


# ---- caching and batching ----

def test_the_roster_is_read_once_a_minute_and_an_import_shows_at_once(base):
    clock = FakeClock()
    store = make_store()
    store.monotonic = clock.now
    store.import_roster(Roster(reviewers=[Reviewer("Dana Whitaker", institution="RRMC", phone="+1")]))
    before = len(base.requests)
    assert store.reviewers()[0].phone == "+1"
    assert store.reviewers()[0].phone == "+1"
    assert len(base.requests) == before + 1
    make_store().import_roster(Roster(reviewers=[Reviewer("Dana Whitaker", institution="RRMC", phone="+2")]))
    clock.sleep(59)
    assert store.reviewers()[0].phone == "+1"       # a coordinator's edit: within the minute
    clock.sleep(2)
    assert store.reviewers()[0].phone == "+2"
    store.import_roster(Roster(reviewers=[Reviewer("Dana Whitaker", institution="RRMC", phone="+3")]))
    assert store.reviewers()[0].phone == "+3"       # our own import: at once


def test_writes_go_ten_records_a_request(base):
    store = make_store()
    before = len(base.requests)
    store.import_roster(Roster(supporters=[Supporter(f"Person {n}", institution="RRMC") for n in range(24)]))
    writes = [r for r in base.requests[before:] if r["method"] == "PATCH"]
    assert len(writes) == 3 and len(store.supporters()) == 24


# ---- the fake keeps Airtable's rules and formats ----

def test_the_fake_refuses_more_than_ten_records_and_unknown_choices(base):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    eleven = {"records": [{"fields": {"Event": str(n)}} for n in range(11)]}
    assert session.post(f"{URL}/v0/{BASE}/Events", json=eleven).status_code == 422
    bad = {"records": [{"fields": {"Case ID": "PS-1", "Status": "Lost"}}]}
    assert session.post(f"{URL}/v0/{BASE}/Cases", json=bad).status_code == 422
    merge_on_email = {"performUpsert": {"fieldsToMergeOn": ["Requester Email"]},
                      "records": [{"fields": {"Requester Email": "a@example.org"}}]}
    assert session.patch(f"{URL}/v0/{BASE}/Cases", json=merge_on_email).status_code == 422
    assert requests.get(f"{URL}/v0/{BASE}/Cases").status_code == 401


def _shape(value):
    """Keys and value types; a list by the shape of its first item (an empty one: any)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else ["str"]
    return type(value).__name__


def test_the_fakes_answers_have_the_documented_shapes(base, load_json):
    store = make_store()
    store.create_case(a_case(1))
    listed = store.table("Cases").api.get(store.table("Cases").urls.records, params={"pageSize": 1})
    documented = load_json("records_list__page_with_offset.json")
    assert set(listed) <= set(documented) and set(listed["records"][0]) == set(documented["records"][0])
    upserted = store.api.request("PATCH", store.table("Messages").urls.records, json={
        "performUpsert": {"fieldsToMergeOn": ["Key"]}, "records": [{"fields": {"Key": "k", "Status": "sent"}}]})
    assert _shape(upserted) == _shape(load_json("records_upsert__created_and_updated.json"))
    schema = store.api.get(store.api.base(BASE).urls.tables)
    BaseSchema.from_api(schema, store.api, context=store.api.base(BASE))   # pyairtable's models accept it
    documented_fields = {f["type"]: f for t in load_json("meta_tables__base_schema.json")["tables"]
                         for f in t["fields"]}
    for table in schema["tables"]:
        assert set(table) >= {"id", "name", "primaryFieldId", "fields", "views"}
        for field in table["fields"]:
            if field["type"] in documented_fields and "options" in documented_fields[field["type"]]:
                expected = set(documented_fields[field["type"]]["options"]) - {"inverseLinkFieldId"}
                assert set(field["options"]) == expected, field["name"]


@pytest.fixture
def load_json():
    from tests.conftest import FIXTURES
    return lambda name: json.loads((FIXTURES / "airtable" / name).read_text())


# ---- flask airtable init | check, and the intake path with Airtable configured ----

@pytest.fixture
def overrides(overrides, fake):
    return {**overrides, "AIRTABLE_API_KEY": TOKEN, "AIRTABLE_BASE_ID": BASE, "AIRTABLE_API_URL": URL}


def test_init_on_an_empty_base_creates_everything_and_a_second_run_nothing(fake, runner):
    first = runner.invoke(args=["airtable", "init"])
    assert first.exit_code == 0, first.output
    assert first.output.count("created table") == 7
    tables = {t["name"]: t for t in fake.bases[BASE]}
    for name, specs in airtable.SCHEMA.items():
        fields = {f["name"]: f for f in tables[name]["fields"]}
        assert [f["name"] for f in tables[name]["fields"]] == [s.name for s in specs]
        assert tables[name]["primaryFieldId"] == fields[specs[0].name]["id"]
        assert {n: f["type"] for n, f in fields.items()} == {s.name: s.type for s in specs}
    events = {f["name"]: f for f in tables["Events"]["fields"]}
    assert events["Case"]["options"]["linkedTableId"] == tables["Cases"]["id"]
    assert tables["Cases"]["fields"][3]["options"]["timeZone"] == "America/New_York"
    status = next(f for f in tables["Cases"]["fields"] if f["name"] == "Status")
    assert [c["name"] for c in status["options"]["choices"]][:2] == ["New", "Needs attention"]
    requests_before = len(fake.requests)
    second = runner.invoke(args=["airtable", "init"])
    assert second.exit_code == 0 and "Nothing to create" in second.output
    assert len(fake.requests) == requests_before + 1          # one schema read, no writes
    assert runner.invoke(args=["airtable", "check"]).exit_code == 0


def test_init_adds_what_is_missing_and_says_what_it_cannot_create(fake, runner):
    runner.invoke(args=["airtable", "init"])
    fake.set_field(BASE, "Cases", "Flyer", delete=True)
    fake.set_field(BASE, "Cases", "Status", type="singleLineText")
    result = runner.invoke(args=["airtable", "init"])
    assert result.exit_code == 1
    assert "created field Cases.Flyer" in result.output
    assert "could not create: Cases.Status is a singleLineText field; Peerline needs singleSelect" in result.output
    assert [f["name"] for f in fake.table(BASE, "Cases")["fields"]].count("Flyer") == 1


def test_a_base_made_before_the_referrer_fields_gets_them_from_init(fake, runner):
    runner.invoke(args=["airtable", "init"])
    for name in ("Referrer Name", "Referrer Phone", "Referrer Email"):
        fake.set_field(BASE, "Cases", name, delete=True)
    drift = runner.invoke(args=["airtable", "check"])
    assert drift.exit_code == 1 and "missing field Cases.Referrer Phone (phoneNumber)" in drift.output
    result = runner.invoke(args=["airtable", "init"])
    assert result.exit_code == 0
    assert "created field Cases.Referrer Name" in result.output
    assert "created field Cases.Referrer Email" in result.output
    assert runner.invoke(args=["airtable", "check"]).exit_code == 0


def test_check_reports_drift_and_exits_non_zero(fake, runner):
    empty = runner.invoke(args=["airtable", "check"])
    assert empty.exit_code == 1 and "missing table Cases" in empty.output
    runner.invoke(args=["airtable", "init"])
    clean = runner.invoke(args=["airtable", "check"])
    assert clean.exit_code == 0 and "matches" in clean.output
    fake.set_field(BASE, "Messages", "Provider ID", delete=True)
    fake.set_field(BASE, "Cases", "Requester Email", type="singleLineText")
    status = next(f for f in fake.table(BASE, "Cases")["fields"] if f["name"] == "Status")
    status["options"]["choices"] = [c for c in status["options"]["choices"] if c["name"] != "Referred"]
    fake.table(BASE, "Cases")["fields"].append({"id": "fldOwn", "name": "Coordinator notes", "type": "richText"})
    drift = runner.invoke(args=["airtable", "check"])
    assert drift.exit_code == 1
    assert "missing field Messages.Provider ID (singleLineText)" in drift.output
    assert "Cases.Requester Email is a singleLineText field; Peerline needs email" in drift.output
    assert "Cases.Status lacks the choices Referred" in drift.output
    assert "Coordinator notes" not in drift.output


def test_a_refused_token_is_explained_without_the_token(fake, runner):
    fake.token = "patSomethingElse"
    result = runner.invoke(args=["airtable", "check"])
    assert result.exit_code != 0 and "HTTP 401" in result.output and TOKEN not in result.output


def test_the_form_to_a_case_in_airtable_with_reviewers_told(fake, client, ctx, run_worker):
    assert isinstance(ctx.store, airtable.AirtableCaseStore)
    setup = make_store()
    airtable.init_base(setup)
    from cli import read_roster_csv
    from config.settings import ROOT
    roster, _ = read_roster_csv(ROOT / "config" / "sample_roster.csv")
    setup.import_roster(roster)
    before = len(fake.requests)

    _, hidden = get_form(client, "/request?flyer=ICU-3")
    for _ in range(2):                                  # the same submission delivered twice
        assert client.post("/request", data={**hidden, **GOOD}).status_code == 303
    run_worker()
    used = len(fake.requests) - before

    [case] = fake.records(BASE, "Cases")
    fields = case["fields"]
    assert fields["Status"] == "New" and fields["Institution"] == "NCH" and fields["Flyer"] == "ICU-3"
    assert fields["Requester Name"] == "Zebulon" and fields["Source"] == "web"
    events = fake.records(BASE, "Events")
    assert sorted(e["fields"]["Event"] for e in events) == ["Case created", "Reviewers notified"]
    assert all(e["fields"]["Case"] == [case["id"]] for e in events)
    told = {r.phone for r in roster.reviewers if r.institution == "NCH" or r.program_lead}
    sent = ctx.db.outbox_list()
    assert {m.recipient for m in sent if m.channel == "sms"} == told
    assert len([m for m in sent if m.channel == "email"]) == len(told)
    mirrored = fake.records(BASE, "Messages")
    assert len(mirrored) == 2 * len(told)
    assert {m["fields"]["Status"] for m in mirrored} == {"sent"}
    assert all(m["fields"]["Case"] == [case["id"]] for m in mirrored)
    assert fake.times(BASE, status=429) == []
    assert fake.busiest_second(BASE, since=before) <= 5
    assert ctx.store.list_cases()[0].case_id == fields["Case ID"]
    # The case's upsert, one write of its messages, one of its events, and the first reads of
    # supporters and reviewers (then cached): nothing looked up that intake already knows.
    assert used == 3 + 2


def test_airtable_commands_say_when_airtable_is_not_configured(tmp_path):
    from app import create_app
    app = create_app({"DATA_DIR": str(tmp_path / "plain"), "SECRET_KEY": "test-secret"})
    result = app.test_cli_runner().invoke(args=["airtable", "check"])
    assert result.exit_code != 0 and "Airtable is not configured" in result.output
    database.dispose_engines()
