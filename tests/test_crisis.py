"""The crisis path: a request in crisis is escalated at once, at any hour, to every on-call
reviewer by SMS and to the program leads by email, and the requester receives the crisis
resources through their preferred channel. Twilio and SendGrid are mocked at the HTTP layer.
"""
from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest

import peerline_root
from test_intake import GOOD, submit
from test_sendgrid import SENDGRID, mail_posts, sendgrid_accepts
from conftest import load_fixture
from test_twilio import MESSAGES_URL, TWILIO, posts
from workflows import intake, notify, tasks

NY = timezone(timedelta(hours=-5))
NIGHT = datetime(2026, 11, 24, 2, 15, tzinfo=NY)      # deep in quiet hours


@pytest.fixture
def overrides(overrides):
    return {**overrides, **TWILIO, **SENDGRID}


@pytest.fixture
def providers(mocked):
    """Twilio answers each create with a new SID; SendGrid accepts every mail."""
    sids = (f"SM{n:032x}" for n in itertools.count(1))
    template = json.loads(load_fixture("twilio", "api__message_create__accepted.json")[0])

    def created(request):
        return 201, {}, json.dumps({**template, "sid": next(sids), "to": parse_qs(request.body)["To"][0]})

    mocked.add_callback("POST", MESSAGES_URL, callback=created, content_type="application/json")
    sendgrid_accepts(mocked)
    return mocked


@pytest.fixture
def night(ctx):
    ctx.clock.pin(NIGHT)
    return NIGHT


def sms_sent(mocked):
    return [{k: v[0] for k, v in parse_qs(c.request.body).items()} for c in posts(mocked)]


def mails_sent(mocked):
    return [json.loads(c.request.body) for c in mail_posts(mocked)]


def crisis_case(ctx):
    [case] = ctx.store.list_cases()
    return case


def test_crisis_request_is_escalated_at_once_in_the_middle_of_the_night(client, ctx, roster, providers, night,
                                                                         run_worker):
    assert submit(client, urgency="Crisis").status_code == 303
    run_worker()
    case = crisis_case(ctx)
    assert case.urgency == "Crisis"
    sms = sms_sent(providers)
    on_call = {r.phone for r in roster.reviewers if r.on_call}
    crisis_sms = [m for m in sms if "URGENT" in m["Body"]]
    assert {m["To"] for m in crisis_sms} == on_call and len(crisis_sms) == len(on_call)
    for m in crisis_sms:
        assert f"ref {case.ref}" in m["Body"] and "Zebulon" not in m["Body"] and "Surgery" not in m["Body"]
    [to_requester] = [m for m in sms if m["To"] == "+15550100123"]
    assert "988" in to_requester["Body"] and "Employee Assistance Program" in to_requester["Body"]
    assert f"ref {case.ref}" in to_requester["Body"] and "Zebulon" not in to_requester["Body"]
    # Nothing about a crisis case waits for quiet hours, not even the routine new-case SMS.
    assert all(r.status == "sent" for r in ctx.db.ledger_rows(case.case_id))
    leads = {r.email for r in roster.reviewers if r.program_lead}
    urgent_mail = [m for m in mails_sent(providers) if m["subject"].startswith("URGENT")]
    assert {m["personalizations"][0]["to"][0]["email"] for m in urgent_mail} == leads
    assert "Zebulon" not in json.dumps(urgent_mail)
    events = [e.event for e in ctx.store.list_events(case.case_id)]
    for reviewer in roster.reviewers:
        if reviewer.on_call:
            assert f"Crisis alert by SMS to on-call reviewer {reviewer.name}: sent" in events
        if reviewer.program_lead:
            assert f"Crisis alert by email to program lead {reviewer.name}: sent" in events
    assert "Crisis resources to the requester by SMS: sent" in events
    assert events.index("Case created") < events.index("Reviewers notified")


def test_running_it_again_sends_and_records_nothing_twice(client, ctx, roster, providers, night, run_worker):
    submit(client, urgency="Crisis")
    run_worker()
    case = crisis_case(ctx)
    sent, events = len(providers.calls), ctx.store.list_events(case.case_id)
    [row] = ctx.db.list_inbox()
    ctx.db.reopen_submission(row.id)
    run_worker()
    intake.escalate_crisis(ctx, case)
    notify.run_due(ctx)
    assert len(providers.calls) == sent
    assert [e.event for e in ctx.store.list_events(case.case_id)] == [e.event for e in events]


def test_the_forms_crisis_answer_makes_it_a_crisis(ctx, roster, providers, night, run_worker):
    ctx.db.record_submission(source="web", source_key="web:crisis-answer",
                             payload={"answers": {**GOOD, "urgency": "Routine", "crisis": "Yes"}})
    run_worker()
    case = crisis_case(ctx)
    assert case.urgency == "Crisis"
    assert any("URGENT" in m["Body"] for m in sms_sent(providers))


def test_requester_who_prefers_email_gets_the_resources_by_email(ctx, roster, providers, night, run_worker):
    ctx.db.record_submission(source="web", source_key="web:crisis-email", payload={"answers": {
        **GOOD, "urgency": "Crisis", "preferred_contact": "Email", "requester_email": "zeb@example.org"}})
    run_worker()
    [mail] = [m for m in mails_sent(providers) if m["personalizations"][0]["to"][0]["email"] == "zeb@example.org"]
    assert "988" in mail["content"][0]["value"] and "Zebulon" not in json.dumps(mail)
    assert not [m for m in sms_sent(providers) if m["To"] == "+15550100123"]
    assert "Crisis resources to the requester by email: sent" in [
        e.event for e in ctx.store.list_events(crisis_case(ctx).case_id)]


def test_when_the_preferred_channel_fails_the_other_one_carries_the_resources(ctx, roster, providers, night,
                                                                              run_worker):
    ctx.db.opt_out("sms", "+15550100123", source="STOP")
    ctx.db.record_submission(source="web", source_key="web:crisis-fallback", payload={"answers": {
        **GOOD, "urgency": "Crisis", "requester_email": "zeb@example.org"}})
    run_worker()
    case = crisis_case(ctx)
    events = [e.event for e in ctx.store.list_events(case.case_id)]
    assert "Crisis resources to the requester by SMS: failed" in events
    assert "Crisis resources to the requester by email: sent" in events
    notify.run_due(ctx)
    told = [m for m in mails_sent(providers) if m["subject"].startswith("Could not reach a requester by SMS")]
    assert len(told) == len([r for r in roster.reviewers if r.program_lead])


def test_requester_with_no_contact_is_recorded_not_silently_skipped(ctx, roster, providers, night, run_worker):
    ctx.db.record_submission(source="web", source_key="web:crisis-nocontact", payload={"answers": {
        **GOOD, "urgency": "Crisis", "requester_phone": "", "requester_email": ""}})
    run_worker()
    case = crisis_case(ctx)
    assert "Crisis resources not sent: no phone or email on the request" in [
        e.event for e in ctx.store.list_events(case.case_id)]
    assert any("URGENT" in m["Body"] for m in sms_sent(providers))     # the reviewers still are


def test_crisis_retries_come_back_within_two_minutes(ctx, roster, mocked, night, run_worker):
    mocked.add("POST", MESSAGES_URL, status=503, json={"code": 20503, "message": "unavailable", "status": 503})
    sendgrid_accepts(mocked)
    ctx.db.record_submission(source="web", source_key="web:crisis-retry", payload={"answers": {
        **GOOD, "urgency": "Crisis"}})
    run_worker()
    rows = [r for r in ctx.db.ledger_rows() if r.kind == "crisis" and r.channel == "sms"]
    assert rows and all(r.status == "retry" for r in rows)
    assert all(r.next_attempt_at - NIGHT <= timedelta(seconds=150) for r in rows)


def _queues(tmp_path, redis_url):
    yield "sqlite", peerline_root.make_huey({"DATA_DIR": str(tmp_path / "q")})
    yield "redis", peerline_root.make_huey({"REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "q")})


def test_crisis_work_jumps_the_queue_backlog_on_every_queue_backend(tmp_path, redis_url):
    for name, queue in _queues(tmp_path, redis_url):
        courier = queue.task(name="process_submission")(lambda inbox_id: None)
        for inbox_id in (1, 2, 3):
            queue.enqueue(courier.s(inbox_id, priority=tasks.PRIORITY_NORMAL))
        queue.enqueue(courier.s(99, priority=tasks.PRIORITY_CRISIS))
        assert queue.dequeue().args == (99,), name
        queue.flush()



def test_a_crisis_request_for_a_colleague_alerts_reviewers_but_does_not_contact_the_colleague(
        client, ctx, roster, providers, run_worker):
    """The colleague has not agreed to be contacted yet: only the reviewers act."""
    submit(client, for_whom="Colleague", urgency="Crisis", requester_email="colleague@example.org")
    run_worker()
    case = crisis_case(ctx)
    texted = {m["To"] for m in sms_sent(providers)}
    mailed = {p["to"][0]["email"] for m in mails_sent(providers) for p in m["personalizations"]}
    assert {r.phone for r in roster.reviewers if r.on_call} <= texted
    assert "+15550100123" not in texted and "colleague@example.org" not in mailed
    assert "Crisis resources not sent: request made for a colleague; on-call reviewers decide" in \
        [e.event for e in ctx.store.list_events(case.case_id)]
