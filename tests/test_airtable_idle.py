"""A quiet Airtable base costs almost no requests (workflows/watch.py): with the webhook healthy
the periodic jobs read nothing when nothing changed, a ping still gets an approval offered at
once, and when the webhook is not healthy the poll reads every minute again, so an approval or
a coordinator's Closed is still carried out. Airtable is the fake (tests/fake_airtable.py)
through `responses`; its clock is ours."""
from __future__ import annotations

from datetime import timedelta

import pytest

from integrations import airtable
from tests.test_airtable import BASE, fake, make_store  # noqa: F401  (fixture)
from tests.test_airtable_webhook import base, hook, overrides, queued, worker  # noqa: F401  (fixtures)
from tests.test_offers import AVERY
from workflows import watch
from workflows.model import Case

#: The periodic jobs that may read Airtable, and the ones that must not at idle either.
IDLE_JOBS = ("poll_approvals", "review_clock", "auto_close", "followup_clock", "expire_offers",
             "deliver_messages", "sweep_inbox")


@pytest.fixture
def tied(ctx, fake):
    """Our clock pinned, and Airtable's clock the same one."""
    ctx.clock.pin(ctx.clock.now().replace(minute=0, second=0, microsecond=0))
    fake.now = ctx.clock.now
    ctx.store.throttle = airtable.Throttle(0)         # no pacing: these tests count, not time
    return ctx.clock


@pytest.fixture
def healthy(tied, hook, worker, ctx):
    """The webhook registered and checked by the worker; every job has made its first read."""
    worker.refresh_airtable_webhooks.call_local()
    assert watch.webhook_healthy(ctx)
    run(worker, *IDLE_JOBS)
    tied.advance(timedelta(minutes=1))
    return worker


def run(worker, *names) -> None:
    for name in names:
        getattr(worker, name).call_local()


def reads(fake, since: int) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in fake.requests[since:]]


def new_case(ctx, n: int = 1) -> Case:
    now = ctx.now()
    return ctx.store.create_case(Case(
        case_id=f"PS-482{n}", source="web", source_response_id=f"web:idle-{n}", status="New", for_whom="Self",
        requester_name="Zebulon", requester_phone="+1 555 010 0123", preferred_contact="Text message",
        institution="NCH", role="Nurse", role_preference="Same", submitted_at=now,
        review_due=now + timedelta(hours=72)))


def coordinator_sets(fake, case: Case, **fields) -> None:
    fake.edit_record(BASE, "Cases", case.record_id, fields)


def offers_sent(ctx) -> list:
    return [m for m in ctx.db.outbox_list() if m.recipient == AVERY]


def ping(client, fake, hook):
    body = fake.ping_body(BASE, hook["id"])
    return client.post("/webhooks/airtable", data=body, headers={
        "Content-Type": "application/json", "X-Airtable-Content-MAC": fake.mac(BASE, hook["id"], body)})


def test_idle_jobs_make_no_airtable_request_when_nothing_changed(ctx, fake, tied, healthy):
    before = len(fake.requests)
    for _ in range(59):                       # an idle hour, minute by minute
        run(healthy, *IDLE_JOBS)
        tied.advance(timedelta(minutes=1))
    assert reads(fake, before) == []
    run(healthy, "poll_approvals")            # the hourly safety net: one read of what changed
    [read] = reads(fake, before)
    assert read.startswith("GET") and "Cases" in read


def test_an_approval_is_offered_at_once_when_airtable_pings(client, ctx, fake, tied, healthy, hook, queued):
    case = new_case(ctx)
    tied.advance(timedelta(minutes=5))
    coordinator_sets(fake, case, Status="Approved")
    assert ping(client, fake, hook).status_code == 200 and queued == ["poll_approvals"]
    healthy.poll_approvals_now.call_local()
    assert fake.records(BASE, "Cases")[0]["fields"]["Status"] == "Offered"
    assert len(offers_sent(ctx)) == 1 and f"YES {case.ref}" in offers_sent(ctx)[0].body


def test_with_the_webhook_unhealthy_an_approval_without_a_ping_is_offered_by_the_next_minute(
        ctx, fake, tied, healthy, hook):
    hook["lastNotificationResult"] = {"success": False, "error": {"message": "HTTP 503"},
                                      "completionTimestamp": ctx.now().isoformat(), "durationMs": 9.0,
                                      "retryNumber": 2}
    run(healthy, "refresh_airtable_webhooks")
    assert not watch.webhook_healthy(ctx)
    case = new_case(ctx)
    tied.advance(timedelta(minutes=5))
    coordinator_sets(fake, case, Status="Approved")          # Airtable's ping never reaches us
    run(healthy, "poll_approvals")
    assert len(offers_sent(ctx)) == 1 and fake.records(BASE, "Cases")[0]["fields"]["Status"] == "Offered"


def test_the_poll_reads_every_minute_again_once_the_webhook_is_no_longer_known_healthy(
        ctx, fake, tied, healthy, hook):
    before = len(fake.requests)
    for _ in range(3):
        run(healthy, "poll_approvals")
        tied.advance(timedelta(minutes=1))
    assert reads(fake, before) == []
    # Airtable drops the webhook (expired unrefreshed): the checks find none, or cannot run at all.
    fake.webhooks[BASE].clear()
    run(healthy, "refresh_airtable_webhooks")
    assert not watch.webhook_healthy(ctx)
    before = len(fake.requests)
    for _ in range(3):
        run(healthy, "poll_approvals")
        tied.advance(timedelta(minutes=1))
    assert len(reads(fake, before)) == 3


def test_a_verdict_of_healthy_lapses_when_the_checks_stop(ctx, fake, tied, healthy):
    tied.advance(watch.HEALTH_VALID)
    assert not watch.webhook_healthy(ctx)
    before = len(fake.requests)
    run(healthy, "poll_approvals")
    assert len(reads(fake, before)) == 1


def test_a_refused_ping_sends_the_poll_back_to_every_minute(client, ctx, fake, tied, healthy, hook):
    ctx.settings["AIRTABLE_WEBHOOK_SECRET"] = "d3Jvbmcgc2VjcmV0IG9uIG91ciBzaWRl"     # a wrong secret
    assert ping(client, fake, hook).status_code == 403
    assert not watch.webhook_healthy(ctx)
    case = new_case(ctx)
    coordinator_sets(fake, case, Status="Approved")
    tied.advance(timedelta(minutes=1))
    run(healthy, "poll_approvals")
    assert len(offers_sent(ctx)) == 1


def test_a_coordinators_closed_in_airtable_is_carried_out_by_the_hourly_safety_net(ctx, fake, tied, healthy):
    case = new_case(ctx)
    tied.advance(timedelta(minutes=5))
    coordinator_sets(fake, case, Status="Closed")            # no ping reached us
    tied.advance(watch.HEALTHY_PERIOD)
    run(healthy, "poll_approvals")
    [record] = fake.records(BASE, "Cases")
    assert record["fields"]["Status"] == "Closed" and "Closed At" in record["fields"]
    assert "Closed (Status set to Closed)" in {e["fields"]["Event"] for e in fake.records(BASE, "Events")}


def test_the_review_clock_reads_only_when_something_of_a_case_comes_due(ctx, fake, tied, healthy):
    case = new_case(ctx)                                     # Review Due in 72 h: the reminder at 48 h
    tied.advance(watch.HEALTHY_PERIOD)
    run(healthy, "poll_approvals")                           # the poll sees the new case
    before = len(fake.requests)
    for _ in range(12):
        run(healthy, "review_clock")
        tied.advance(timedelta(hours=1))
    assert reads(fake, before) == []
    # A coordinator brings Review Due forward in Airtable: the reminder is due now.
    coordinator_sets(fake, case, **{"Review Due": (ctx.now() + timedelta(hours=20)).isoformat()})
    tied.advance(watch.HEALTHY_PERIOD)
    run(healthy, "poll_approvals", "review_clock")
    events = {e["fields"]["Event"] for e in fake.records(BASE, "Events")}
    assert any(e.startswith("Review reminder sent") for e in events)
    before = len(fake.requests)
    tied.advance(timedelta(minutes=5))
    run(healthy, "review_clock")
    run(healthy, "review_clock")
    assert len(reads(fake, before)) <= 3                     # one read after the reminder, then quiet
    tied.advance(timedelta(hours=1))
    before = len(fake.requests)
    run(healthy, "review_clock")
    assert reads(fake, before) == []


def test_a_webhook_with_days_left_is_checked_not_refreshed(ctx, fake, tied, healthy, hook):
    expires = hook["expirationTime"]
    tied.advance(timedelta(hours=2))
    before = len(fake.requests)
    run(healthy, "refresh_airtable_webhooks")
    assert reads(fake, before) == [f"GET /v0/bases/{BASE}/webhooks"] and hook["expirationTime"] == expires
    hook["areNotificationsEnabled"] = False                  # Airtable turned them off
    run(healthy, "refresh_airtable_webhooks")
    assert hook["areNotificationsEnabled"] is True and hook["expirationTime"] == expires
    tied.advance(timedelta(days=1, hours=1))
    run(healthy, "refresh_airtable_webhooks")
    assert hook["expirationTime"] > expires


def test_cases_changed_since_reads_only_what_changed(ctx, fake, tied, base):
    store = make_store()
    old, other = new_case(ctx, 1), new_case(ctx, 2)
    tied.advance(timedelta(minutes=10))
    since = ctx.now()
    tied.advance(timedelta(minutes=1))
    coordinator_sets(fake, other, Status="Approved")
    made = new_case(ctx, 3)
    assert sorted(c.case_id for c in store.cases_changed_since(since)) == sorted([other.case_id, made.case_id])
    assert {c.case_id for c in store.cases_changed_since(None)} == {old.case_id, other.case_id, made.case_id}


def test_a_webhook_made_before_it_watched_the_referral_is_named_in_the_log(ctx, fake, tied, healthy, hook, caplog):
    filters = hook["specification"]["options"]["filters"]
    filters["watchDataInFieldIds"] = filters["watchDataInFieldIds"][:1]          # Status only
    run(healthy, "refresh_airtable_webhooks")
    assert watch.webhook_healthy(ctx)
    assert any("--replace" in r.getMessage() and hook["id"] in r.getMessage() for r in caplog.records)
