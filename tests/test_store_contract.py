"""One contract, three backends: SqlCaseStore on SQLite and on PostgreSQL, and
AirtableCaseStore against the fake Airtable through `responses` (pyairtable's real request
code runs). Whatever a workflow can observe through the CaseStore protocol must be the same."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from config import settings as settings_module
from integrations import airtable, database
from tests.fake_airtable import FakeAirtable
from workflows.model import Case, Event, MessageRecord, Resource, Reviewer, Roster, Supporter

AIRTABLE_URL = "https://api.airtable.test"
BASE_ID = "appContract00001"
T0 = datetime(2026, 3, 1, 9, 30, 0, tzinfo=timezone.utc)

#: Text that breaks formulas built by pasting strings, and text stores like to mangle.
NASTY = [
    "O'Brien \"Ed\" {Case ID} }{",
    "x' & '1'='1",
    "\",TRUE())",
    "'), TRUE(), ('",
    "back\\slash \\' \\\\ end\\",
    "emoji 🙂👩🏽‍⚕️ and ünïcödé",
    ("quote' brace} \",TRUE()) 🙂 " * 400)[:10_000],
]


@dataclasses.dataclass
class Backend:
    name: str
    store: object
    fake: FakeAirtable | None = None

    def messages(self) -> list[dict]:
        return self.fake.records(BASE_ID, "Messages")


@pytest.fixture(params=["sqlite", "postgres", "airtable"])
def backend(request, tmp_path, mocked):
    if request.param == "sqlite":
        yield Backend("sqlite", database.SqlCaseStore(database.Database(f"sqlite:///{tmp_path / 'store.db'}")))
        database.dispose_engines()
    elif request.param == "postgres":
        url = settings_module.database_url({"DATABASE_URL": request.getfixturevalue("pg_url")})
        yield Backend("postgres", database.SqlCaseStore(database.Database(url)))
    else:
        fake = FakeAirtable(token="patContract")
        fake.add_base(BASE_ID)
        fake.install(mocked, AIRTABLE_URL)
        store = airtable.AirtableCaseStore("patContract", BASE_ID, api_url=AIRTABLE_URL,
                                           throttle=airtable.Throttle(0))
        created, refused = airtable.init_base(store)
        assert len(created) == 7 and not refused
        yield Backend("airtable", store, fake)


def a_case(n: int = 1, **changes) -> Case:
    case = Case(for_whom="Colleague", requester_name="Zebulon Quist", requester_phone="+1 555 010 0123",
                requester_email="zq@example.org", referrer_name="Quinn Referrer", referrer_phone="+15550100456",
                referrer_email="qr@example.org", preferred_contact="Text message", institution="NCH",
                department="Surgery", role="Nurse", specialty="Perioperative", role_preference="Same",
                department_preference="Different", outside_my_institution=True, urgency="Urgent",
                flyer="ICU-3", case_id=f"PS-{1000 + n}", source="web", source_response_id=f"web:{n}",
                submitted_at=T0 + timedelta(minutes=n), status="New",
                review_due=T0 + timedelta(minutes=n, hours=12),
                suggested_supporters="Avery Chen\nJordan Patel", problems="")
    return dataclasses.replace(case, **changes)


def without_id(obj):
    return dataclasses.replace(obj, record_id="")


def test_create_then_find_by_case_id_and_by_source_id(backend):
    store = backend.store
    assert store.find_case(case_id="PS-1001") is None
    assert store.find_case(source_response_id="web:1") is None
    made = store.create_case(a_case(1))
    assert made.record_id
    assert without_id(made) == a_case(1)
    assert store.find_case(case_id="PS-1001") == made
    assert store.find_case(source_response_id="web:1") == made
    assert made.submitted_at.tzinfo is not None and made.submitted_at.utcoffset() == timedelta(0)


def test_dates_in_another_zone_come_back_as_the_same_instant_in_utc(backend):
    plus_two = timezone(timedelta(hours=2))
    made = backend.store.create_case(a_case(1, submitted_at=datetime(2026, 3, 1, 11, 30, tzinfo=plus_two)))
    assert made.submitted_at == T0
    assert made.submitted_at.tzinfo == timezone.utc


def test_creating_the_same_submission_twice_returns_the_first_unchanged(backend):
    store = backend.store
    first = store.create_case(a_case(1))
    again = store.create_case(a_case(1, requester_name="Someone Else", status="Approved", urgency="Crisis"))
    assert again == first
    assert store.find_case(source_response_id="web:1") == first
    assert len(store.list_cases()) == 1


def test_update_changes_what_is_given_and_links_a_supporter(backend):
    store = backend.store
    store.import_roster(Roster(supporters=[Supporter("Avery Chen", institution="RRMC")]))
    [avery] = store.supporters()
    store.create_case(a_case(1))
    expires = T0 + timedelta(hours=4)
    updated = store.update_case("PS-1001", status="Offered", assigned_supporter=avery.record_id,
                                offer_expires=expires, outside_my_institution=False, problems="")
    assert updated.status == "Offered" and updated.assigned_supporter == avery.record_id
    assert updated.offer_expires == expires and updated.outside_my_institution is False
    assert store.find_case(case_id="PS-1001") == updated
    assert without_id(updated) == a_case(1, status="Offered", assigned_supporter=avery.record_id,
                                         offer_expires=expires, outside_my_institution=False)
    cleared = store.update_case("PS-1001", assigned_supporter="", offer_expires=None)
    assert cleared.assigned_supporter == "" and cleared.offer_expires is None


def test_update_supporter_changes_what_is_given_and_shows_at_once(backend):
    store = backend.store
    store.import_roster(Roster(supporters=[Supporter("Avery Chen", institution="RRMC", max_open_cases=3),
                                           Supporter("Jordan Patel", institution="RRMC")]))
    avery, jordan = store.supporters()
    assigned = T0 + timedelta(hours=2)
    updated = store.update_supporter(avery.record_id, last_assigned_at=assigned)
    assert updated == dataclasses.replace(avery, last_assigned_at=assigned)
    assert store.supporters() == [updated, jordan]
    with pytest.raises(KeyError):
        store.update_supporter("recNoSuchPerson00" if backend.name == "airtable" else "9999",
                               last_assigned_at=assigned)


def test_update_of_an_unknown_case_is_a_key_error(backend):
    with pytest.raises(KeyError):
        backend.store.update_case("PS-9999", status="Closed")


def test_list_cases_by_status_in_submission_order(backend):
    store = backend.store
    for n, status in ((3, "New"), (1, "New"), (2, "Approved")):
        store.create_case(a_case(n, status=status))
    assert [c.case_id for c in store.list_cases("New")] == ["PS-1001", "PS-1003"]
    assert [c.case_id for c in store.list_cases("Approved")] == ["PS-1002"]
    assert [c.case_id for c in store.list_cases()] == ["PS-1001", "PS-1002", "PS-1003"]
    assert store.list_cases("Closed") == []


def test_cases_changed_since_holds_every_case_changed_after_it(backend):
    """What the store-changes poll reads (workflows/watch.py): at least every case made or
    changed after the time given (our database: every case), every case for None."""
    store = backend.store
    store.create_case(a_case(1))
    store.create_case(a_case(2))
    since = datetime.now(timezone.utc) - timedelta(seconds=1)     # the stores stamp changes by the real time
    store.update_case("PS-1002", status="Approved")
    store.create_case(a_case(3))
    assert {"PS-1002", "PS-1003"} <= {c.case_id for c in store.cases_changed_since(since)}
    assert {c.case_id for c in store.cases_changed_since(None)} == {"PS-1001", "PS-1002", "PS-1003"}
    changed = {c.case_id: c for c in store.cases_changed_since(since)}
    assert changed["PS-1002"].status == "Approved"


def test_events_are_kept_per_case_in_order(backend):
    store = backend.store
    store.create_case(a_case(1))
    store.create_case(a_case(2, case_id="PS-'}\",TRUE())"))
    store.add_events([Event("PS-1001", "Case created", at=T0, actor="peerline"),
                      Event("PS-1001", "Reviewers notified", at=T0 + timedelta(seconds=5), actor="peerline")])
    store.add_events([Event("PS-'}\",TRUE())", "Case created", at=T0, actor="coordinator")])
    store.add_events([])
    assert store.list_events("PS-1001") == [
        Event("PS-1001", "Case created", at=T0, actor="peerline"),
        Event("PS-1001", "Reviewers notified", at=T0 + timedelta(seconds=5), actor="peerline")]
    assert store.list_events("PS-'}\",TRUE())") == [
        Event("PS-'}\",TRUE())", "Case created", at=T0, actor="coordinator")]
    assert store.list_events("PS-1002") == []


def _by_key(items):
    return {(i.name, i.institution): i for i in items}


def test_roster_import_upserts_on_name_and_institution(backend):
    store = backend.store
    first = Roster(
        supporters=[Supporter("Avery Chen", phone="+15550101101", institution="RRMC", max_open_cases=3),
                    Supporter("Avery Chen", phone="+15550101199", institution="NCH"),
                    Supporter("Jordan Patel", institution="RRMC", active=False)],
        reviewers=[Reviewer("Dana Whitaker", institution="RRMC", on_call=True),
                   Reviewer("Toni Marchetti", phone="+15550101133", program_lead=True)],
        resources=[Resource("Employee Assistance Program", institution="RRMC", kind="Employee assistance"),
                   Resource("Clinician Counselling Service", kind="Counselling", hours="Mon-Fri")])
    assert store.import_roster(first) == {"supporters": 3, "reviewers": 2, "resources": 2}
    before = {**_by_key(store.supporters()), **_by_key(store.reviewers()), **_by_key(store.resources())}
    assert before[("Avery Chen", "RRMC")].max_open_cases == 3
    assert before[("Jordan Patel", "RRMC")].active is False

    second = Roster(
        supporters=[Supporter("Avery Chen", phone="+15550109999", institution="RRMC", max_open_cases=1)],
        reviewers=[Reviewer("Toni Marchetti", phone="+15550100000", program_lead=True),
                   Reviewer("Robin Asante", institution="NCH")],
        resources=[Resource("Clinician Counselling Service", kind="Counselling", hours="24/7")])
    assert store.import_roster(second) == {"supporters": 1, "reviewers": 2, "resources": 1}
    supporters, reviewers, resources = (_by_key(store.supporters()), _by_key(store.reviewers()),
                                        _by_key(store.resources()))
    assert len(supporters) == len(store.supporters()) == 3
    assert len(reviewers) == len(store.reviewers()) == 3
    assert len(resources) == len(store.resources()) == 2
    avery = supporters[("Avery Chen", "RRMC")]
    assert (avery.phone, avery.max_open_cases) == ("+15550109999", 1)
    assert avery.record_id == before[("Avery Chen", "RRMC")].record_id
    assert supporters[("Avery Chen", "NCH")].phone == "+15550101199"
    toni = reviewers[("Toni Marchetti", "")]
    assert toni.phone == "+15550100000" and toni.program_lead is True
    assert toni.record_id == before[("Toni Marchetti", "")].record_id
    assert resources[("Clinician Counselling Service", "")].hours == "24/7"


def test_roster_is_empty_until_imported(backend):
    store = backend.store
    assert store.roster_is_empty() is True
    store.import_roster(Roster(reviewers=[Reviewer("Toni Marchetti", program_lead=True)]))
    assert store.roster_is_empty() is False


def test_messages_are_mirrored_once_per_key(backend):
    store = backend.store
    case = store.create_case(a_case(1))
    key = "PS-1001:new_case:reviewer:recX:sms"
    store.mirror_messages([MessageRecord(key, "PS-1001", "new_case", "sms", "Reviewer")])
    store.mirror_messages([MessageRecord(key, "PS-1001", "new_case", "sms", "Reviewer", status="sent",
                                         provider_id="SM123", sent_at=T0)])
    store.mirror_messages([])
    if backend.fake is None:
        return      # the SQL store's ledger is already in its own database: mirroring is a no-op
    [row] = backend.messages()
    assert row["fields"] == {"Key": key, "Case": [case.record_id], "Kind": "new_case", "Channel": "sms",
                             "Recipient Role": "Reviewer", "Status": "sent", "Provider ID": "SM123",
                             "Sent At": "2026-03-01T09:30:00.000Z"}


def test_nasty_text_is_stored_exactly_and_found_exactly(backend):
    store = backend.store
    store.create_case(a_case(0, source_response_id="x", requester_name="decoy"))
    for n, text in enumerate(NASTY, start=1):
        store.create_case(a_case(n, source_response_id=text, requester_name=text, department=text,
                                 problems=text + "\nsecond line"))
    for n, text in enumerate(NASTY, start=1):
        found = store.find_case(source_response_id=text)
        assert found is not None and found.case_id == f"PS-{1000 + n}"
        assert found.source_response_id == text and found.requester_name == text
        assert found.department == text and found.problems == text + "\nsecond line"
    assert store.find_case(source_response_id="x").requester_name == "decoy"
    assert store.find_case(source_response_id="x' & '1'='") is None
    assert len(store.list_cases()) == len(NASTY) + 1


def test_nasty_names_are_upserted_exactly(backend):
    store = backend.store
    people = [Supporter(text[:200], institution="RRMC") for text in NASTY]
    store.import_roster(Roster(supporters=people))
    store.import_roster(Roster(supporters=[Supporter(p.name, institution="RRMC", phone="+1555") for p in people]))
    found = store.supporters()
    assert sorted(s.name for s in found) == sorted(p.name for p in people)
    assert {s.phone for s in found} == {"+1555"}


def test_an_existing_sql_database_gets_the_referrer_columns(tmp_path):
    """A database made before the Referrer fields existed (and before migrations: no
    alembic_version) keeps working and gains them."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = database.SqlCaseStore(database.Database(url))
    store.create_case(a_case(1, referrer_name="", referrer_phone="", referrer_email=""))
    with store.engine.begin() as conn:
        for column in ("referrer_name", "referrer_phone", "referrer_email"):
            conn.exec_driver_sql(f"ALTER TABLE cases DROP COLUMN {column}")
        conn.exec_driver_sql("DROP TABLE alembic_version")
    database.dispose_engines()
    reopened = database.SqlCaseStore(database.Database(url))
    assert reopened.find_case(case_id="PS-1001").referrer_name == ""
    reopened.create_case(a_case(2))
    assert reopened.find_case(case_id="PS-1002").referrer_email == "qr@example.org"
    database.dispose_engines()
