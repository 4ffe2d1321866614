"""Confidentiality, enforced: a request whose every field holds a unique canary string goes
through intake, the crisis path, failures at both providers and the SMS routes, and no canary
appears in any SMS, email text, log line, URL called, SendGrid category or custom argument,
stored error, or Event. (The requester's own address is where their crisis message goes, so
it appears as that message's recipient and nowhere else.)"""
from __future__ import annotations

import itertools
import json
import logging
import re
from urllib.parse import parse_qs, unquote

import pytest

from conftest import load_fixture
from test_intake import get_form
from test_sendgrid import MAIL_URL, SENDGRID, mail_posts, post_events
from integrations.twilio import SMS_PATH, STATUS_PATH
from test_twilio import MESSAGES_URL, TWILIO, post_sms, posts, sign
from workflows import notify

CANARIES = {
    "requester_name": "Qzx7Name",
    "requester_phone": "+1 555 013 7913",
    "requester_email": "qzx7mail@example.org",
    "department": "Qzx7Dept",
    "specialty": "Qzx7Spec",
    "flyer": "Qzx7Flyer",
}
PHONE_FORMS = ("555 013 7913", "5550137913", "+15550137913", "555-013-7913")
CHOICE_CANARIES = {"for_whom": "Qzx7For", "institution": "Qzx7Inst", "role": "Qzx7Role",
                   "preferred_contact": "Qzx7Pref", "role_preference": "Qzx7RP", "department_preference": "Qzx7DP"}
SMS_TEXT_CANARY = "Qzx7Text"


def leaks(text: str) -> list[str]:
    text = unquote(str(text)).replace("+", " ") + " " + str(text)
    found = [c for c in [*CANARIES.values(), *CHOICE_CANARIES.values(), SMS_TEXT_CANARY] if c.lower() in text.lower()]
    found += [p for p in PHONE_FORMS if p in text or p.replace(" ", "") in re.sub(r"[\s()-]", "", text)]
    return found


@pytest.fixture
def overrides(overrides):
    return {**overrides, **TWILIO, **SENDGRID}


@pytest.fixture
def providers(mocked):
    """Twilio and SendGrid as they really behave, including refusals that quote the address:
    Twilio refuses the requester's number (its message names it), SendGrid their address."""
    sids = (f"SM{n:032x}" for n in itertools.count(1))
    created = json.loads(load_fixture("twilio", "api__message_create__accepted.json")[0])

    def twilio_create(request):
        to = parse_qs(request.body)["To"][0]
        if to == "+15550137913":
            return 400, {}, json.dumps({"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                                        "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400})
        return 201, {}, json.dumps({**created, "sid": next(sids), "to": to})

    def sendgrid_send(request):
        body = json.loads(request.body)
        to = body["personalizations"][0]["to"][0]["email"]
        if to == CANARIES["requester_email"]:
            return 400, {}, json.dumps({"errors": [{"message": f"Does not contain a valid address: {to}",
                                                    "field": "personalizations.0.to.0.email"}]})
        return 202, {"X-Message-Id": f"msg{next(sids)[-12:]}"}, ""

    mocked.add_callback("POST", MESSAGES_URL, callback=twilio_create, content_type="application/json")
    mocked.add_callback("POST", MAIL_URL, callback=sendgrid_send, content_type="application/json")
    return mocked


def test_canaries_never_leave_the_case(client, ctx, roster, providers, run_worker, caplog):
    caplog.set_level(logging.DEBUG)
    # 1. The built-in form, every free-text field a canary, marked crisis.
    _, hidden = get_form(client, f"/request?flyer={CANARIES['flyer']}")
    answer = client.post("/request", data={**hidden, **CANARIES, "for_whom": "Self", "preferred_contact": "Text message",
                                           "institution": "NCH", "role": "Nurse", "urgency": "Crisis"})
    assert answer.status_code == 303 and not leaks(answer.headers["Location"])
    # 2. The same through the inbox with canaries in the choice fields as well.
    ctx.db.record_submission(source="web", source_key="web:canary-choices", payload={"answers": {
        **CANARIES, **CHOICE_CANARIES, "urgency": "Crisis", "crisis": "yes"}})
    run_worker()
    notify.run_due(ctx)
    cases = ctx.store.list_cases()
    assert len(cases) == 2 and all(c.urgency == "Crisis" for c in cases)
    # The requester could not be reached by SMS or email: the leads were told (by id only).
    assert any(m.kind == "unreachable" for m in ctx.db.ledger_rows())
    # 3. The SMS routes: the requester's number texts in, with canary text; a delivery report.
    replies = [post_sms(client, f"YES {cases[0].ref} {SMS_TEXT_CANARY}", CANARIES["requester_phone"]),
               post_sms(client, SMS_TEXT_CANARY, CANARIES["requester_phone"]),
               post_sms(client, "HELP", CANARIES["requester_phone"]),
               post_sms(client, "STOP", CANARIES["requester_phone"])]
    assert all(r.status_code == 200 for r in replies)
    sent_sid = next(r.provider_id for r in ctx.db.ledger_rows() if r.provider_id.startswith("SM"))
    status = {"MessageSid": sent_sid, "MessageStatus": "undelivered", "ErrorCode": "30003",
              "To": CANARIES["requester_phone"], "From": "+15550100200", "AccountSid": TWILIO["TWILIO_ACCOUNT_SID"]}
    assert client.post(STATUS_PATH, data=status, headers={"X-Twilio-Signature": sign(STATUS_PATH, status)}).status_code == 200
    bounce = json.loads(load_fixture("sendgrid", "events__bounce.json")[0])
    bounce[0]["email"], bounce[0]["reason"] = CANARIES["requester_email"], f"550 no such user {CANARIES['requester_email']}"
    post_events(client, json.dumps(bounce).encode())
    notify.run_due(ctx)

    # What went out by SMS: texts carry no canary.
    sms = [{k: v[0] for k, v in parse_qs(c.request.body).items()} for c in posts(providers)]
    assert len(sms) > 5
    for message in sms:
        assert not leaks(message["Body"]), message["Body"]
    for reply in replies:
        assert not leaks(reply.get_data(as_text=True))
    # What went out by email: texts, categories and custom args carry no canary.
    mails = [json.loads(c.request.body) for c in mail_posts(providers)]
    assert len(mails) > 3
    for mail in mails:
        assert not leaks(mail["subject"]) and not leaks(json.dumps(mail["content"]))
        assert not leaks(json.dumps(mail.get("categories"))) and not leaks(json.dumps(mail.get("custom_args")))
        for p in mail["personalizations"]:
            assert not leaks(json.dumps(p.get("custom_args")))
    # No URL we called names anyone.
    for call in providers.calls:
        assert not leaks(call.request.url), call.request.url
    # No log line, at any level, from us or the libraries.
    for record in caplog.records:
        assert not leaks(record.getMessage()), (record.name, record.getMessage())
        assert not leaks(record.exc_text or "")
    # Nothing stored as an error, a message value, an inbox error or an Event.
    for row in ctx.db.ledger_rows():
        assert not leaks(row.error) and not leaks(row.values_json) and not leaks(row.key)
    for row in ctx.db.list_inbox():
        assert not leaks(row.last_error)
    for case in cases:
        for event in ctx.store.list_events(case.case_id):
            assert not leaks(event.event) and not leaks(event.actor)


def test_sms_webhook_logs_ids_only(client, ctx, roster, caplog):
    caplog.set_level(logging.DEBUG)
    post_sms(client, f"NO 4821 {SMS_TEXT_CANARY}", CANARIES["requester_phone"])
    client.post(SMS_PATH, data={"From": CANARIES["requester_phone"], "Body": SMS_TEXT_CANARY},
                headers={"X-Twilio-Signature": "forged"})
    assert caplog.records and not leaks(caplog.text)


def test_canaries_stay_out_of_the_checkin_the_leads_email_and_the_survey(client, ctx, roster, providers,
                                                                         run_worker, runner, caplog):
    """The second half: the supporter's check-in SMS, the program lead's email after a hard
    answer, the survey links and the survey page carry no canary."""
    from datetime import timedelta

    import peerline_root
    from workflows import tasks
    caplog.set_level(logging.DEBUG)
    # Daytime in the program's zone, so that no routine SMS waits out quiet hours.
    ctx.clock.pin(ctx.clock.now().replace(hour=15, minute=0, second=0, microsecond=0))
    _, hidden = get_form(client, f"/request?flyer={CANARIES['flyer']}")
    assert client.post("/request", data={**hidden, **CANARIES, "for_whom": "Self", "preferred_contact": "Email",
                                         "institution": "NCH", "role": "Nurse", "urgency": "Routine"}
                       ).status_code == 303
    run_worker()
    [case] = ctx.store.list_cases()
    assert runner.invoke(args=["cases", "approve", case.case_id]).exit_code == 0
    offered = next(s for s in ctx.store.supporters()
                   if s.record_id == ctx.store.find_case(case_id=case.case_id).assigned_supporter)
    replies = [post_sms(client, f"YES {case.ref}", offered.phone), post_sms(client, f"DONE {case.ref}", offered.phone)]
    tasks.use_context(ctx)
    try:
        queue = peerline_root.queue(ctx.settings)
        ctx.clock.advance(timedelta(hours=25))
        queue.followup_clock.call_local()
        replies.append(post_sms(client, f"CHECKIN {case.ref} 5 {SMS_TEXT_CANARY}", offered.phone))
        replies.append(post_sms(client, "5", offered.phone))
        ctx.clock.advance(timedelta(days=7))
        queue.followup_clock.call_local()
    finally:
        tasks.use_context(None)
    notify.run_due(ctx)
    bodies = [{k: v[0] for k, v in parse_qs(c.request.body).items()}["Body"] for c in posts(providers)]
    assert any("How are you after it?" in b for b in bodies)
    mails = [json.loads(c.request.body) for c in mail_posts(providers)]
    assert any(m["subject"].startswith("Supporter check-in") for m in mails)
    for body in bodies:
        assert not leaks(body), body
    for mail in mails:
        assert not leaks(mail["subject"]) and not leaks(json.dumps(mail["content"]))
    for reply in replies:
        assert not leaks(reply.get_data(as_text=True))
    links = [m.group(0) for b in bodies if (m := re.search(r"/survey/\S+", b))]
    assert links
    for link in links:
        assert not leaks(link)
        path = link
        assert "Was the peer support helpful?" in client.get(path).get_data(as_text=True)
        assert not leaks(client.get(path).get_data(as_text=True))
        assert not leaks(client.post(path, data={"helpful": "Yes"}).get_data(as_text=True))
    for record in caplog.records:
        assert not leaks(record.getMessage()), (record.name, record.getMessage())
    for event in ctx.store.list_events(case.case_id):
        assert not leaks(event.event)
    for row in [*ctx.db.checkins_list(), *ctx.db.survey_answers_list()]:
        assert not leaks(json.dumps(row, default=str))
