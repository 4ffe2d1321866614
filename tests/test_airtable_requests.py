"""What a routine case costs in Airtable requests, through the fake Airtable: the same few
requests however many cases the base already holds (Airtable's Team plan counts every call),
a case's messages and events written together, and open cases counted from our own database
while a coordinator still closes cases in Airtable."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from integrations import airtable
from tests.fake_airtable import FakeAirtable
from tests.test_airtable import BASE, TOKEN, URL, make_store
from tests.test_intake import submit
from tests.test_matching import suggested_names
from workflows import answers, followup, notify, reports
from workflows.model import Case

EARLIER = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)


@pytest.fixture
def fake(mocked):
    fake = FakeAirtable(token=TOKEN)
    fake.add_base(BASE)
    fake.install(mocked, URL)
    return fake


@pytest.fixture
def overrides(overrides, fake):
    return {**overrides, "AIRTABLE_API_KEY": TOKEN, "AIRTABLE_BASE_ID": BASE, "AIRTABLE_API_URL": URL}


@pytest.fixture
def base(fake, ctx):
    """The base as a coordinator set it up: tables made by init, the sample roster imported."""
    from cli import read_roster_csv
    from config.settings import ROOT
    setup = make_store()
    airtable.init_base(setup)
    setup.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    return fake


def earlier_cases(fake: FakeAirtable, start: int, count: int) -> None:
    """Closed cases put straight into the base (not through the API): the program's history."""
    for n in range(start, start + count):
        fake.add_record(BASE, "Cases", {"Case ID": f"PS-H{n:05d}", "Source": "web",
                                        "Source Response ID": f"web:earlier-{n}", "Status": "Closed",
                                        "Submitted At": "2026-01-05T09:00:00.000Z"})


def requests_for_one_case(fake, client, run_worker, **answers) -> Counter:
    before = len(fake.requests)
    assert submit(client, **answers).status_code == 303
    run_worker()
    return Counter(f"{r['method']} {r['path'].rsplit('/', 1)[-1]}" for r in fake.requests[before:])


def test_a_routine_case_costs_three_requests_with_100_or_10000_cases_in_the_base(base, client, ctx, run_worker):
    earlier_cases(base, 0, 100)
    requests_for_one_case(base, client, run_worker, requester_phone="+1 555 010 0990")   # reads the roster
    with_100 = requests_for_one_case(base, client, run_worker, requester_phone="+1 555 010 0991")
    earlier_cases(base, 100, 9_900)
    with_10000 = requests_for_one_case(base, client, run_worker, requester_phone="+1 555 010 0992")

    # The case (one upsert), its messages (one write), its events (one write); nothing listed.
    assert with_100 == with_10000 == Counter({"PATCH Cases": 1, "PATCH Messages": 1, "POST Events": 1})
    assert sum(with_10000.values()) <= 4
    [case] = [c for c in base.records(BASE, "Cases") if c["fields"].get("Requester Phone") == "+15550100992"]
    linked = lambda table: [r for r in base.records(BASE, table) if r["fields"].get("Case") == [case["id"]]]  # noqa: E731
    assert sorted(e["fields"]["Event"] for e in linked("Events")) == ["Case created", "Reviewers notified"]
    told = {m.recipient for m in ctx.db.outbox_list() if m.case_id == case["fields"]["Case ID"]}
    assert len(told) >= 4 and len(linked("Messages")) == len(told)     # several reviewers, SMS and email
    assert {m["fields"]["Status"] for m in linked("Messages")} == {"sent"}


def test_a_case_retried_after_a_failure_is_found_and_gets_each_event_once(base, client, ctx, run_worker):
    """A run that made the case, then lost the answer to its events' write (Airtable stored
    them): the retry looks the case up (its Case ID is known) and reads its events, so
    nothing is made or written twice."""
    def stored_but_answer_lost(fake):
        [case] = fake.records(BASE, "Cases")
        for event in ("Case created", "Reviewers notified"):
            fake.add_record(BASE, "Events", {"Event": event, "Case": [case["id"]], "Actor": "peerline",
                                             "At": "2026-01-05T09:00:00.000Z"})
        fake.refuse_next(BASE, 500)

    base.before_next_write(lambda fake: None)                               # the case
    base.before_next_write(lambda fake: None)                               # its messages
    base.before_next_write(stored_but_answer_lost)                          # its events
    assert submit(client).status_code == 303
    run_worker()
    [case] = base.records(BASE, "Cases")
    events = [e["fields"]["Event"] for e in base.records(BASE, "Events")]
    assert sorted(events) == ["Case created", "Reviewers notified"]
    [row] = ctx.db.list_inbox()
    assert row.status == "done" and row.attempts == 2 and row.case_id == case["fields"]["Case ID"]
    sent = [m.recipient for m in ctx.db.outbox_list()]
    assert len(sent) == len(set(sent)) == len(base.records(BASE, "Messages"))


def test_a_full_supporter_is_suggested_again_once_a_coordinator_closes_their_cases(base, client, ctx,
                                                                                   run_worker):
    drew = next(s for s in ctx.store.supporters() if s.name == "Drew Kim")      # NCH nurse, Max Open Cases 2
    for n in range(drew.max_open_cases):       # his cases, as the worker leaves them when he says YES
        ctx.store.create_case(Case(case_id=f"PS-90{n}", source="web", source_response_id=f"web:his-{n}",
                                   submitted_at=EARLIER, status="Assigned", assigned_supporter=drew.record_id))
        offer = ctx.db.offer_create(case_id=f"PS-90{n}", supporter_id=drew.record_id, offered_at=EARLIER,
                                    expires_at=EARLIER + timedelta(hours=4))
        ctx.db.offer_close(offer.id, "accepted", EARLIER)
    submit(client, requester_phone="+1 555 010 0998", specialty="Emergency Nursing")
    run_worker()
    full = next(c for c in ctx.store.list_cases() if c.requester_phone.endswith("0998"))
    assert "Drew Kim" not in full.suggested_supporters

    # A coordinator closes his cases in Airtable; the periodic follow-up poll sees it.
    for record in base.table(BASE, "Cases")["records"].values():
        if record["fields"]["Case ID"].startswith("PS-90"):
            record["fields"]["Status"] = "Closed"
    followup.poll(ctx)
    submit(client, requester_phone="+1 555 010 0997", specialty="Emergency Nursing")
    run_worker()
    freed = next(c for c in ctx.store.list_cases() if c.requester_phone.endswith("0997"))
    assert suggested_names(freed)[0] == "Drew Kim"
    assert "; 0 open cases;" in freed.suggested_supporters.splitlines()[0]

    # She reopens one of them (back to Contacted): it is his again, and closing it again counts.
    reopened = next(r for r in base.table(BASE, "Cases")["records"].values() if r["fields"]["Case ID"] == "PS-900")
    reopened["fields"]["Status"] = "Contacted"
    followup.poll(ctx)
    assert ctx.db.open_case_counts()[drew.record_id] == 1
    assert ctx.store.find_case(case_id="PS-900").closed_at is None
    assert "Reopened (Status set to Contacted)" in {e["fields"]["Event"] for e in base.records(BASE, "Events")}
    reopened["fields"]["Status"] = "Closed"
    followup.poll(ctx)
    assert drew.record_id not in ctx.db.open_case_counts()
    assert ctx.store.find_case(case_id="PS-900").closed_at is not None


def test_a_case_given_to_another_supporter_by_hand_counts_for_them_not_for_the_first(base, client, ctx,
                                                                                        run_worker):
    """A coordinator changes Assigned Supporter in Airtable on a case a supporter holds,
    without Status Approved: nobody is texted, but the case now counts for the one named."""
    supporters = {s.name: s for s in ctx.store.supporters()}
    drew, other = supporters["Drew Kim"], next(s for n, s in supporters.items() if n != "Drew Kim")
    ctx.store.create_case(Case(case_id="PS-910", source="web", source_response_id="web:handed",
                               submitted_at=EARLIER, status="Assigned", assigned_supporter=drew.record_id))
    offer = ctx.db.offer_create(case_id="PS-910", supporter_id=drew.record_id, offered_at=EARLIER,
                                expires_at=EARLIER + timedelta(hours=4))
    ctx.db.offer_close(offer.id, "accepted", EARLIER)
    assert ctx.db.open_case_counts() == {drew.record_id: 1}
    record = next(r for r in base.table(BASE, "Cases")["records"].values() if r["fields"]["Case ID"] == "PS-910")
    texts_before = len(ctx.db.outbox_list())

    record["fields"]["Assigned Supporter"] = [other.record_id]
    followup.poll(ctx)
    assert ctx.db.open_case_counts() == {other.record_id: 1}
    assert ctx.db.accepted_counts_since(ctx.now() - timedelta(days=30))[other.record_id] == 1   # a new case for them
    events = [e["fields"]["Event"] for e in base.records(BASE, "Events")]
    assert events.count(f"Assigned Supporter set by hand to {other.name}: the case counts for them now "
                        "(nobody was asked by SMS)") == 1
    assert len(ctx.db.outbox_list()) == texts_before            # nobody texted
    followup.poll(ctx, nudged=True)                              # seen again: recorded once
    assert [o.status for o in ctx.db.offers_for_case("PS-910")] == ["accepted", "by hand"]
    # They were never asked: a YES from them finds no offer; their DONE records the contact.
    assert answers.accept(ctx, other.phone, "910") == notify.text(ctx, "sms_reply_no_open_offer", ref="910")
    assert answers.contact_made(ctx, other.phone, "910") == notify.text(ctx, "sms_reply_contact_recorded", ref="910")
    assert ctx.store.find_case(case_id="PS-910").status == "Contacted"

    # Given back to Drew by hand: his again; closed: nobody's.
    record["fields"]["Assigned Supporter"] = [drew.record_id]
    followup.poll(ctx, nudged=True)
    assert ctx.db.open_case_counts() == {drew.record_id: 1}
    record["fields"]["Status"] = "Closed"
    followup.poll(ctx, nudged=True)
    assert ctx.db.open_case_counts() == {}


def test_an_offered_case_a_coordinator_marks_assigned_by_hand_keeps_counting_after_the_offer_time(base, ctx):
    """The supporter said yes on the phone and she set Status Assigned: the waiting offer is
    withdrawn (its expiry no longer ends the case's count), and a second name added beside
    the first leaves the case as it was."""
    supporters = {s.name: s for s in ctx.store.supporters()}
    drew, other = supporters["Drew Kim"], next(s for n, s in supporters.items() if n != "Drew Kim")
    ctx.store.create_case(Case(case_id="PS-911", source="web", source_response_id="web:phoned",
                               submitted_at=EARLIER, status="Offered", assigned_supporter=drew.record_id))
    ctx.db.offer_create(case_id="PS-911", supporter_id=drew.record_id, offered_at=ctx.now(),
                        expires_at=ctx.now() + timedelta(hours=4))
    record = next(r for r in base.table(BASE, "Cases")["records"].values() if r["fields"]["Case ID"] == "PS-911")

    record["fields"]["Status"] = "Assigned"
    followup.poll(ctx, nudged=True)
    assert [o.status for o in ctx.db.offers_for_case("PS-911")] == ["withdrawn", "by hand"]
    assert ctx.db.open_case_counts() == {drew.record_id: 1}
    assert ctx.db.offers_expired(ctx.now() + timedelta(hours=5)) == []

    record["fields"]["Assigned Supporter"] = [drew.record_id, other.record_id]
    followup.poll(ctx, nudged=True)
    assert ctx.db.open_case_counts() == {drew.record_id: 1}
    assert len(ctx.db.offers_for_case("PS-911")) == 2


def test_a_case_only_ever_given_by_hand_counts_and_reports_no_review_time(base, ctx):
    drew = next(s for s in ctx.store.supporters() if s.name == "Drew Kim")
    ctx.store.create_case(Case(case_id="PS-912", source="web", source_response_id="web:by-hand",
                               submitted_at=EARLIER, status="Assigned", assigned_supporter=drew.record_id))
    followup.poll(ctx, nudged=True)
    assert ctx.db.open_case_counts() == {drew.record_id: 1}
    [facts] = reports.facts_for(ctx)["cases"]
    assert facts.hours_to_review is None and facts.reviewed_in_window is None


def test_delivery_reports_reach_the_messages_table_together_within_a_minute(base, client, ctx, run_worker):
    requests_for_one_case(base, client, run_worker)
    keys = [row.key for row in ctx.db.ledger_rows()]
    assert len(keys) >= 4
    before = len(base.requests)
    for key in keys:                        # the providers' reports, one webhook each
        assert notify.record_delivery(ctx, key, "delivered")
    assert len(base.requests) == before     # nothing yet: the periodic job mirrors them
    notify.run_due(ctx)                     # every minute
    assert [f"{r['method']} {r['path'].rsplit('/', 1)[-1]}" for r in base.requests[before:]] == \
        ["PATCH Messages"] * ((len(keys) + 9) // 10)
    assert {m["fields"]["Status"] for m in base.records(BASE, "Messages")} == {"delivered"}
