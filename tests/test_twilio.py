"""Twilio: SMS sent once through the Messaging Service, failures sorted, delivery reports kept
in order, supporters' replies understood, and the signature checked the way Twilio signs.

Twilio's API is mocked with `responses` (twilio-python's own HTTP client runs); every request
we send is checked against Twilio's OpenAPI spec (a copy kept in tests/contracts).
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
from twilio.request_validator import RequestValidator

from conftest import load_fixture
from integrations import twilio
from workflows import notify, sms_commands
from workflows.model import Case

CONTRACTS = Path(__file__).parent / "contracts"
ACCOUNT = "AC3f1c2b7e9d4a6b8c0d1e2f3a4b5c6d7e"
SERVICE = "MG9a8b7c6d5e4f30211a2b3c4d5e6f7a8b"
TOKEN = "test-auth-token-5f0e"
PUBLIC = "https://peerline.example.org"
TWILIO = {"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_MESSAGING_SERVICE_SID": SERVICE,
          "PUBLIC_BASE_URL": PUBLIC}
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
SENT_SID = "SM5d2c4f0a9e8b7c6d5e4f3a2b1c0d9e8f"
NY = timezone(timedelta(hours=-5))   # America/New_York in November (EST)
DAYTIME = datetime(2026, 11, 23, 14, 0, tzinfo=timezone.utc)   # 09:00 in New York


# ---------------------------------------------------------------- helpers other tests use

@lru_cache(maxsize=1)
def twilio_spec():
    from openapi_core import OpenAPI
    with open(CONTRACTS / "twilio_api_v2010.json") as fh:
        raw = json.load(fh)
    return OpenAPI.from_dict(raw), raw


def assert_twilio_contract(request) -> dict:
    """Validate a request we sent against Twilio's spec, plus the x-twilio.conditional rules
    plain validators ignore (one of From/MessagingServiceSid, one of Body/MediaUrl/ContentSid)."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest
    spec, raw = twilio_spec()
    result = spec.unmarshal_request(RequestsOpenAPIRequest(request))
    assert not result.errors, result.errors
    if request.method == "POST":
        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        path = raw["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]
        for group in path["post"]["x-twilio"]["conditional"]:
            names = ["".join(w.capitalize() for w in f.split("_")) for f in group]
            assert any(n in form for n in names), f"one of {names} is required"
        return form
    return {}


def twilio_created(mocked, sid=SENT_SID, url=MESSAGES_URL):
    body = json.loads(load_fixture("twilio", "api__message_create__accepted.json")[0])
    body["sid"] = sid
    mocked.add("POST", url, json=body, status=201)


def twilio_refuses(mocked, fixture: str, status: int, url=MESSAGES_URL):
    mocked.add("POST", url, body=load_fixture("twilio", fixture)[0], status=status,
               content_type="application/json")


def posts(mocked, url=MESSAGES_URL):
    return [c for c in mocked.calls if c.request.method == "POST" and c.request.url.split("?")[0] == url]


def sign(path: str, form, token=TOKEN, base=PUBLIC) -> str:
    return RequestValidator(token).compute_signature(base + path, form)


def post_fixture(client, path: str, fixture: str, *, token=TOKEN, signature=None, base_url="http://localhost"):
    """Post a stored Twilio request exactly as sent (raw form body) with its signature."""
    raw, content_type = load_fixture("twilio", fixture)
    form = parse_qsl(raw.decode(), keep_blank_values=True)
    if signature is None:
        signature = sign(path, _multi(form), token)
    return client.post(path, data=raw, content_type=content_type, base_url=base_url,
                       headers={"X-Twilio-Signature": signature})


def post_sms(client, text: str, phone: str, token=TOKEN):
    form = {"MessageSid": "SM" + "1" * 32, "AccountSid": ACCOUNT, "From": phone, "To": "+15550100200",
            "Body": text, "NumMedia": "0", "SmsStatus": "received", "ApiVersion": "2010-04-01"}
    return client.post(twilio.SMS_PATH, data=form, headers={"X-Twilio-Signature": sign(twilio.SMS_PATH, form, token)})


def _multi(pairs):
    from werkzeug.datastructures import MultiDict
    return MultiDict(pairs)


def reply_text(answer) -> str:
    found = re.findall(r"<Message>(.*?)</Message>", answer.get_data(as_text=True), re.S)
    return found[0] if found else ""


def reviewer(ctx, name="Dana Whitaker"):
    return next(r for r in ctx.store.reviewers() if r.name == name)


def send_to(ctx, person, *, case_id="PS-4821", kind="new_case", template="new_case_reviewer_sms", crisis=False):
    return notify.send(ctx, case_id=case_id, kind=kind, template=template,
                       recipient=notify.Recipient(key=f"reviewer:{person.record_id}", role="Reviewer",
                                                  phone=person.phone, email=person.email),
                       values={"ref": case_id.split("-")[1], "deadline": "Tue 24 Nov 09:00 EST", "link": "L",
                               "institution": "Northgate", "urgency": "Routine", "role": "Nurse"},
                       crisis=crisis)


def ledger(ctx, case_id="PS-4821"):
    return {r.key: r for r in ctx.db.ledger_rows(case_id)}


@pytest.fixture
def overrides(overrides):
    return {**overrides, **TWILIO}


@pytest.fixture
def clock(ctx):
    """A settable clock for the service: starts at 09:00 in New York."""
    ctx.clock.pin(DAYTIME)
    return ctx.clock


# ---------------------------------------------------------------- sending

def test_sms_goes_through_the_messaging_service_with_our_status_callback(ctx, roster, mocked, clock):
    twilio_created(mocked)
    dana = reviewer(ctx)
    assert send_to(ctx, dana) == "sent"
    [call] = posts(mocked)
    form = assert_twilio_contract(call.request)
    assert form["To"] == "+15550101125"
    assert form["MessagingServiceSid"] == SERVICE and "From" not in form
    assert form["StatusCallback"] == PUBLIC + "/webhooks/twilio/status"
    assert "ref 4821" in form["Body"] and "Dana" not in form["Body"]
    assert call.request.req_kwargs["timeout"] == 10.0
    assert call.request.headers["Authorization"].startswith("Basic ")
    [row] = ledger(ctx).values()
    assert row.status == "sent" and row.provider_id == SENT_SID and row.error == ""


def test_twilio_api_url_setting_points_the_client_elsewhere(overrides, mocked, tmp_path):
    from app import create_app
    app = create_app({**overrides, "TWILIO_API_URL": "https://twilio-fake.test:8443/"})
    ctx = app.extensions["peerline"]
    ctx.clock.pin(DAYTIME)          # outside quiet hours, whatever the time of the run
    twilio_created(mocked, url=f"https://twilio-fake.test:8443/2010-04-01/Accounts/{ACCOUNT}/Messages.json")
    status = notify.send(ctx, case_id="PS-1000", kind="k", template="new_case_reviewer_sms",
                         recipient=notify.Recipient(key="reviewer:1", role="Reviewer", phone="555 010 1125"),
                         values={"ref": "1000", "deadline": "d", "link": "l"})
    assert status == "sent"
    assert [c.request.url for c in mocked.calls] == [
        f"https://twilio-fake.test:8443/2010-04-01/Accounts/{ACCOUNT}/Messages.json"]
    assert parse_qs(mocked.calls[0].request.body)["To"] == ["+15550101125"]


@pytest.mark.parametrize("fixture,code", [("api__message_create__21211_invalid_number.json", "Twilio 21211"),
                                          ("api__message_create__21610_opted_out.json", "Twilio 21610")])
def test_permanent_failure_is_not_retried_and_a_program_lead_is_told_once(ctx, roster, mocked, clock, fixture, code):
    twilio_refuses(mocked, fixture, 400)
    dana = reviewer(ctx)
    assert send_to(ctx, dana) == "failed"
    row = ledger(ctx)[f"PS-4821:new_case:reviewer:{dana.record_id}:sms"]
    assert row.error == code          # the code only: Twilio's message quotes the number
    for hours in (1, 5, 30):
        clock.pin(DAYTIME + timedelta(hours=hours))
        notify.run_due(ctx)
    assert len(posts(mocked)) == 1
    alerts = [m for m in ctx.db.outbox_list() if m.channel == "email"]
    leads = [r for r in ctx.store.reviewers() if r.program_lead]
    assert [a.recipient for a in alerts] == [lead.email for lead in leads]
    assert "ref 4821" in alerts[0].subject and "reviewer by SMS" in alerts[0].subject
    assert "Dana" not in alerts[0].body and dana.phone not in alerts[0].body
    assert ctx.db.is_opted_out("sms", "+15550101125") == (code == "Twilio 21610")


def test_opted_out_number_is_not_tried_again(ctx, roster, mocked, clock):
    twilio_refuses(mocked, "api__message_create__21610_opted_out.json", 400)
    dana = reviewer(ctx)
    send_to(ctx, dana, case_id="PS-1111")
    assert send_to(ctx, dana, case_id="PS-2222") == "failed"
    assert len(posts(mocked)) == 1
    assert ledger(ctx, "PS-2222")[f"PS-2222:new_case:reviewer:{dana.record_id}:sms"].error == "opted out (STOP)"


@pytest.mark.parametrize("failure", [
    {"status": 503, "json": {"code": 20503, "message": "Service unavailable", "status": 503}},
    {"status": 429, "body": load_fixture("twilio", "api__message_create__429.json")[0]},
    {"status": 401, "body": load_fixture("twilio", "api__message_create__401.json")[0]},   # key being fixed
    {"body": requests.exceptions.ConnectTimeout("connect timed out")},
])
def test_transient_failure_retries_with_backoff_through_the_ledger(ctx, roster, mocked, clock, failure):
    mocked.add("POST", MESSAGES_URL, **failure)
    twilio_created(mocked)
    mocked.add("GET", MESSAGES_URL, json={**json.loads(load_fixture("twilio", "api__messages_list__page.json")[0]),
                                          "messages": []})
    dana = reviewer(ctx)
    assert send_to(ctx, dana) == "retry"
    row = ledger(ctx)[f"PS-4821:new_case:reviewer:{dana.record_id}:sms"]
    assert row.status == "retry" and row.next_attempt_at >= DAYTIME + timedelta(seconds=30)
    notify.run_due(ctx)                       # not due yet: nothing is sent
    assert len(posts(mocked)) == 1
    clock.pin(DAYTIME + timedelta(minutes=2))
    assert notify.run_due(ctx) == 1
    assert len(posts(mocked)) == 2
    row = ledger(ctx)[row.key]
    assert row.status == "sent" and row.provider_id == SENT_SID and row.attempts == 2
    assert not [m for m in ctx.db.outbox_list() if m.channel == "email"]   # nobody alerted


def test_retries_give_up_after_the_limit_and_tell_a_lead(overrides, mocked):
    from app import create_app
    app = create_app({**overrides, "RETRY_MAX_ATTEMPTS": "3"})
    ctx = app.extensions["peerline"]
    ctx.clock.pin(DAYTIME)
    from cli import read_roster_csv
    from config.settings import ROOT
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    mocked.add("POST", MESSAGES_URL, status=500, json={"code": 20500, "message": "Internal", "status": 500})
    mocked.add("GET", MESSAGES_URL, json={"messages": [], "next_page_uri": None, "page": 0, "page_size": 200})
    send_to(ctx, reviewer(ctx))
    for minutes in range(5, 300, 5):
        ctx.clock.pin(DAYTIME + timedelta(minutes=minutes))
        notify.run_due(ctx)
    assert len(posts(mocked)) == 3
    [row] = [r for r in ctx.db.ledger_rows("PS-4821") if r.kind == "new_case"]
    assert row.status == "failed" and row.error == "Twilio 20500"
    assert len([m for m in ctx.db.outbox_list() if m.channel == "email"]) == 1


def test_timeout_after_twilio_accepted_is_reconciled_not_sent_twice(ctx, roster, mocked, clock):
    """Reliability case 12: the create times out after Twilio took it. Before sending again
    we look in Twilio's Messages (filtered by date, never by number) and find it."""
    accepted = []

    def accept_then_time_out(request):
        accepted.append(request)
        raise requests.exceptions.ReadTimeout("read timed out")

    mocked.add_callback("POST", MESSAGES_URL, callback=accept_then_time_out)
    dana = reviewer(ctx)
    assert send_to(ctx, dana) == "retry"
    key = f"PS-4821:new_case:reviewer:{dana.record_id}:sms"
    body = parse_qs(accepted[0].body)["Body"][0]
    page = json.loads(load_fixture("twilio", "api__messages_list__page.json")[0])
    page["messages"][1]["body"] = body            # the text Twilio kept is the one we sent
    mocked.add("GET", MESSAGES_URL, json=page)
    clock.pin(DAYTIME + timedelta(minutes=5))
    notify.run_due(ctx)
    assert len(accepted) == 1 and len(posts(mocked)) == 1
    [lookup] = [c for c in mocked.calls if c.request.method == "GET"]
    assert_twilio_contract(lookup.request)
    query = parse_qs(urlsplit(lookup.request.url).query)
    assert "To" not in query and "5550101125" not in lookup.request.url
    assert query["DateSent>"] == ["2026-11-23T13:55:00Z"]
    row = ctx.db.ledger_get(key)
    assert row.status == "sent" and row.provider_id == SENT_SID


def test_worker_killed_between_accept_and_ledger_write_sends_once(ctx, roster, mocked, clock):
    """The process dies after Twilio accepted and before our write: the claim runs out, the
    periodic task finds the message at Twilio and records it instead of sending again."""
    accepted = []

    def accept_then_die(request):
        accepted.append(request)
        raise SystemExit("worker killed")

    mocked.add_callback("POST", MESSAGES_URL, callback=accept_then_die)
    dana = reviewer(ctx)
    with pytest.raises(SystemExit):
        send_to(ctx, dana)
    key = f"PS-4821:new_case:reviewer:{dana.record_id}:sms"
    assert ctx.db.ledger_get(key).status == "sending"
    page = json.loads(load_fixture("twilio", "api__messages_list__page.json")[0])
    page["messages"][1]["body"] = parse_qs(accepted[0].body)["Body"][0]
    mocked.add("GET", MESSAGES_URL, json=page)
    notify.run_due(ctx)                          # the dead worker's claim has not run out yet
    assert ctx.db.ledger_get(key).status == "sending"
    clock.pin(DAYTIME + timedelta(seconds=int(ctx.settings["INBOX_LEASE_SECONDS"]) + 1))
    notify.run_due(ctx)
    assert len(accepted) == 1
    assert ctx.db.ledger_get(key).provider_id == SENT_SID
    assert ctx.db.ledger_get(key).status == "sent"


def test_a_message_that_went_out_is_never_claimed_again(ctx, roster, mocked, clock):
    twilio_created(mocked)
    dana = reviewer(ctx)
    for _ in range(3):
        send_to(ctx, dana)
        notify.run_due(ctx)
    assert len(posts(mocked)) == 1


# ---------------------------------------------------------------- quiet hours

def test_routine_sms_waits_for_the_end_of_quiet_hours_and_goes_once(ctx, roster, mocked, clock):
    twilio_created(mocked)
    clock.pin(datetime(2026, 11, 23, 23, 30, tzinfo=NY))
    dana = reviewer(ctx)
    assert send_to(ctx, dana) == "held"
    key = f"PS-4821:new_case:reviewer:{dana.record_id}:sms"
    assert ctx.db.ledger_get(key).next_attempt_at == datetime(2026, 11, 24, 7, 0, tzinfo=NY)
    clock.pin(datetime(2026, 11, 24, 3, 0, tzinfo=NY))
    notify.run_due(ctx)
    assert posts(mocked) == []
    clock.pin(datetime(2026, 11, 24, 7, 0, 40, tzinfo=NY))
    notify.run_due(ctx)
    notify.run_due(ctx)
    send_to(ctx, dana)
    assert len(posts(mocked)) == 1
    assert ctx.db.ledger_get(key).status == "sent"


def test_crisis_sms_and_email_ignore_quiet_hours(ctx, roster, mocked, clock):
    twilio_created(mocked)
    clock.pin(datetime(2026, 11, 24, 2, 15, tzinfo=NY))
    dana = reviewer(ctx)
    assert send_to(ctx, dana, kind="crisis", template="crisis_reviewer_sms", crisis=True) == "sent"
    assert send_to(ctx, dana, kind="new_case", template="new_case_reviewer_email") == "sent"
    assert len(posts(mocked)) == 1


# ---------------------------------------------------------------- status callbacks

def _sent_message(ctx, roster, mocked):
    twilio_created(mocked)
    dana = reviewer(ctx)
    send_to(ctx, dana)
    return f"PS-4821:new_case:reviewer:{dana.record_id}:sms"


@pytest.mark.parametrize("order,final", [
    (["status__sent.txt", "status__delivered.txt"], "delivered"),
    (["status__delivered.txt", "status__sent.txt"], "delivered"),
    (["status__sent.txt", "status__delivered.txt", "status__delivered.txt", "status__sent.txt"], "delivered"),
    (["status__sent.txt", "status__undelivered.txt", "status__sent.txt"], "undelivered"),
])
def test_status_callbacks_keep_the_furthest_state(client, ctx, roster, mocked, clock, order, final):
    key = _sent_message(ctx, roster, mocked)
    for fixture in order:
        answer = post_fixture(client, twilio.STATUS_PATH, fixture)
        assert answer.status_code == 200 and "<Response" in answer.get_data(as_text=True)
    row = ctx.db.ledger_get(key)
    assert row.status == final
    assert row.error == ("Twilio 30003" if final == "undelivered" else "")


def test_undelivered_sms_tells_a_program_lead_once(client, ctx, roster, mocked, clock):
    _sent_message(ctx, roster, mocked)
    post_fixture(client, twilio.STATUS_PATH, "status__undelivered.txt")
    post_fixture(client, twilio.STATUS_PATH, "status__undelivered.txt")
    notify.run_due(ctx)
    notify.run_due(ctx)
    alerts = [m for m in ctx.db.outbox_list() if m.channel == "email"]
    assert len(alerts) == len([r for r in ctx.store.reviewers() if r.program_lead]) == 1


def test_failed_21610_callback_records_the_opt_out(client, ctx, roster, mocked, clock):
    _sent_message(ctx, roster, mocked)
    post_fixture(client, twilio.STATUS_PATH, "status__failed_opted_out.txt")
    assert ctx.db.is_opted_out("sms", "+15550101125")


def test_status_changes_reach_the_messages_mirror(client, ctx, roster, mocked, clock):
    mirrored = []
    ctx.store.mirror_messages = lambda records: mirrored.extend((r.key, r.status) for r in records)
    key = _sent_message(ctx, roster, mocked)
    assert [s for k, s in mirrored if k == key] == ["sent"]
    post_fixture(client, twilio.STATUS_PATH, "status__delivered.txt")
    post_fixture(client, twilio.STATUS_PATH, "status__sent.txt")
    notify.run_due(ctx)         # the periodic job: reports are mirrored together, within a minute
    assert [s for k, s in mirrored if k == key] == ["sent", "delivered"]


def test_status_callback_for_a_message_we_do_not_know_is_ignored(client, ctx):
    assert post_fixture(client, twilio.STATUS_PATH, "status__delivered.txt").status_code == 200
    assert ctx.db.ledger_rows() == []


def test_status_callback_without_its_fields_is_400_naming_them(client):
    form = {"MessageSid": SENT_SID, "AccountSid": ACCOUNT}
    answer = client.post(twilio.STATUS_PATH, data=form,
                         headers={"X-Twilio-Signature": sign(twilio.STATUS_PATH, form)})
    assert answer.status_code == 400 and "MessageStatus" in answer.get_json()["error"]


def test_status_callback_while_the_database_is_out_of_reach_is_503_with_retry_after(client, ctx, monkeypatch):
    import sqlalchemy as sa

    def unreachable(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT ... FROM ledger", {}, ConnectionError("refused"))
    monkeypatch.setattr(ctx.db, "ledger_by_provider_id", unreachable)
    answer = post_fixture(client, twilio.STATUS_PATH, "status__delivered.txt")
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0


# ---------------------------------------------------------------- the signature

@pytest.mark.parametrize("route,fixture", [(twilio.STATUS_PATH, "status__delivered.txt"),
                                           (twilio.SMS_PATH, "sms__stop.txt")])
def test_forged_or_missing_signature_is_403_and_changes_nothing(client, ctx, roster, mocked, clock, route, fixture):
    key = _sent_message(ctx, roster, mocked)
    assert post_fixture(client, route, fixture, signature="").status_code == 403
    assert post_fixture(client, route, fixture, token="not-the-token").status_code == 403
    raw, _ = load_fixture("twilio", fixture)
    form = parse_qsl(raw.decode(), keep_blank_values=True)
    signed = sign(route, _multi(form))
    tampered = raw.replace(b"delivered", b"read").replace(b"STOP", b"STOPALL")
    answer = client.post(route, data=tampered, content_type="application/x-www-form-urlencoded",
                         headers={"X-Twilio-Signature": signed})
    assert answer.status_code == 403
    assert ctx.db.ledger_get(key).status == "sent"
    assert not ctx.db.is_opted_out("sms", "+15550101101")


def test_signature_is_checked_against_the_public_url_behind_a_proxy(client, ctx, roster, mocked, clock):
    """Reliability case 7: Flask sees http://10.0.0.7:8000 (and whatever X-Forwarded-Host an
    attacker sets); Twilio signed https://peerline.example.org. Only the latter counts."""
    key = _sent_message(ctx, roster, mocked)
    raw, content_type = load_fixture("twilio", "status__delivered.txt")
    form = _multi(parse_qsl(raw.decode(), keep_blank_values=True))
    internal = client.post(twilio.STATUS_PATH, data=raw, content_type=content_type, base_url="http://10.0.0.7:8000",
                           headers={"X-Twilio-Signature": sign(twilio.STATUS_PATH, form, base="http://10.0.0.7:8000"),
                                    "X-Forwarded-Host": "10.0.0.7:8000"})
    assert internal.status_code == 403
    with_port = client.post(twilio.STATUS_PATH, data=raw, content_type=content_type, base_url="http://10.0.0.7:8000",
                            headers={"X-Twilio-Signature": sign(twilio.STATUS_PATH, form,
                                                                base="https://peerline.example.org:443"),
                                     "X-Forwarded-Host": "evil.example"})
    assert with_port.status_code == 200
    assert ctx.db.ledger_get(key).status == "delivered"


def test_query_string_is_part_of_the_signed_url(client, ctx):
    form = {"MessageSid": SENT_SID, "MessageStatus": "delivered"}
    path = twilio.STATUS_PATH + "?attempt=2"
    good = client.post(path, data=form, headers={"X-Twilio-Signature": sign(path, form)})
    assert good.status_code == 200
    stripped = client.post(path, data=form, headers={"X-Twilio-Signature": sign(twilio.STATUS_PATH, form)})
    assert stripped.status_code == 403


# ---------------------------------------------------------------- two-way SMS

@pytest.mark.parametrize("text,expected", [
    ("YES 4821", ("yes", "4821")), ("yes 4821", ("yes", "4821")), ("  Yes,4821! ", ("yes", "4821")),
    ("YES#4821", ("yes", "4821")), ("yes4821", ("yes", "4821")), ("Y 4821", ("yes", "4821")),
    ("yes ref 4821", ("yes", "4821")), ("Yes PS-4821", ("yes", "4821")), ("yes.", ("yes", None)),
    ("NO 4821", ("no", "4821")), ("no, 4821", ("no", "4821")), ("n 4821", ("no", "4821")),
    ("DONE 4821", ("done", "4821")), ("done-4821", ("done", "4821")), ("Done", ("done", None)),
    ("HELP", ("help", None)), ("help?", ("help", None)), ("info", ("help", None)),
    ("STOP", ("stop", None)), ("unsubscribe", ("stop", None)), ("Stop.", ("stop", None)),
    ("START", ("start", None)), ("unstop", ("start", None)),
    ("yes 4821 thanks", ("unknown", None)), ("yes 48 21", ("unknown", None)), ("4821", ("unknown", None)),
    ("", ("unknown", None)), ("stop 4821", ("unknown", None)), ("maybe later", ("unknown", None)),
])
def test_commands_are_read_forgivingly(text, expected):
    assert sms_commands.parse_command(text) == expected


@pytest.mark.parametrize("text,status,offer", [
    ("YES {ref}", "Assigned", "accepted"), ("yes, #{ref}", "Assigned", "accepted"), ("Yes", "Assigned", "accepted"),
    ("no {ref}", "Offered", "declined"), ("No, ref {ref}.", "Offered", "declined"),
])
def test_a_supporters_answer_through_the_webhook_changes_their_offer(client, ctx, roster, run_worker, runner,
                                                                     mocked, clock, text, status, offer):
    from tests.test_offers import approve, new_case
    twilio_created(mocked)
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    answer = post_sms(client, text.format(ref=case.ref), "+15550101101")      # Avery, offered first
    assert answer.status_code == 200 and case.ref in reply_text(answer)
    assert ctx.store.find_case(case_id=case.case_id).status == status
    assert ctx.db.offers_for_case(case.case_id)[0].status == offer


def test_done_through_the_webhook_records_the_contact(client, ctx, roster, run_worker, runner, mocked, clock):
    from tests.test_offers import approve, new_case
    twilio_created(mocked)
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    post_sms(client, f"YES {case.ref}", "+15550101101")
    answer = post_sms(client, f"done {case.ref}", "+15550101101")
    assert answer.status_code == 200 and case.ref in reply_text(answer)
    assert ctx.store.find_case(case_id=case.case_id).status == "Contacted"


def test_yes_with_no_open_offer_says_so(client, ctx, roster):
    answer = post_fixture(client, twilio.SMS_PATH, "sms__yes_with_ref.txt")
    assert answer.status_code == 200 and answer.mimetype == "application/xml"
    assert reply_text(answer) == "There is no open offer for ref 4821. Nothing has changed."
    assert reply_text(post_fixture(client, twilio.SMS_PATH, "sms__yes_bare.txt")) == \
        "You have no open offer right now. Nothing has changed."


def test_unknown_number_gets_one_generic_reply_whatever_it_asks(client, ctx, roster):
    generic = notify.text(ctx, "sms_reply_unknown_number")
    assert reply_text(post_fixture(client, twilio.SMS_PATH, "sms__unknown_number.txt")) == generic
    for text in ("HELP", "NO 4821", "DONE 4821", "yes", "what is this?"):
        assert reply_text(post_sms(client, text, "+1 555 999 0000")) == generic
    assert "4821" not in generic and ctx.program.program.name not in generic


def test_help_and_unknown_text_from_a_known_number(client, ctx, roster):
    helped = reply_text(post_fixture(client, twilio.SMS_PATH, "sms__help.txt"))
    assert "YES 1234" in helped and "STOP" in helped and len(helped) <= 160
    assert reply_text(post_sms(client, "what?", "+15550101101")) == notify.text(ctx, "sms_reply_unknown_command")
    assert reply_text(post_sms(client, "no", "+15550101101")) == notify.text(ctx, "sms_reply_needs_ref")


def test_stop_records_the_opt_out_and_start_clears_it(client, ctx, roster, mocked, clock):
    answer = post_fixture(client, twilio.SMS_PATH, "sms__stop.txt")
    assert answer.status_code == 200 and reply_text(answer) == ""      # Twilio confirms STOP itself
    assert ctx.db.is_opted_out("sms", "+15550101101")
    avery = next(s for s in ctx.store.supporters() if s.phone == "+15550101101")
    status = notify.send(ctx, case_id="PS-4821", kind="offer", template="new_case_reviewer_sms",
                         recipient=notify.Recipient(key=f"supporter:{avery.record_id}", role="Supporter",
                                                    phone=avery.phone), values={"ref": "4821", "deadline": "d", "link": "l"})
    assert status == "failed" and posts(mocked) == []
    assert reply_text(post_sms(client, "START", "+15550101101")) == ""
    assert not ctx.db.is_opted_out("sms", "+15550101101")


def test_every_reply_is_one_short_sms(ctx):
    for name, template in ctx.templates.items():
        if name.startswith("sms_reply_"):
            text = notify.text(ctx, name, ref="4821")
            assert len(text) <= 160, name


def test_done_records_contact_on_a_case_assigned_to_the_sender(client, ctx, roster, clock):
    avery = next(s for s in ctx.store.supporters() if s.phone == "+15550101101")
    ctx.store.create_case(Case(case_id="PS-4821", source="web", source_response_id="web:done", status="Assigned",
                               assigned_supporter=avery.record_id, submitted_at=DAYTIME))
    assert reply_text(post_sms(client, "done 4821", "+15550101101")) == "Thank you: contact recorded for ref 4821."
    post_sms(client, "DONE 4821", "+15550101101")
    case = ctx.store.find_case(case_id="PS-4821")
    assert case.status == "Contacted" and case.contact_made_at == DAYTIME
    assert [e.event for e in ctx.store.list_events("PS-4821")] == ["Contact made (supporter's SMS)"]
    other = next(s for s in ctx.store.supporters() if s.phone == "+15550101102")
    assert reply_text(post_sms(client, "DONE 4821", other.phone)) == \
        "Ref 4821 is not a case assigned to you. Nothing has changed."


def test_inbound_sms_without_body_is_400(client):
    form = {"MessageSid": "SM" + "2" * 32, "From": "+15550101101"}
    answer = client.post(twilio.SMS_PATH, data=form, headers={"X-Twilio-Signature": sign(twilio.SMS_PATH, form)})
    assert answer.status_code == 400 and "Body" in answer.get_json()["error"]


# ---------------------------------------------------------------- flask sms simulate

def test_simulate_signs_with_the_auth_token_and_prints_the_reply(runner, ctx, roster):
    result = runner.invoke(args=["sms", "simulate", "+15550101101", "YES 4821"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "There is no open offer for ref 4821. Nothing has changed."


def test_simulate_works_on_the_embedded_defaults_and_its_key_is_useless_from_outside(tmp_path):
    from app import create_app
    from cli import read_roster_csv
    from config.settings import ROOT
    app = create_app({"DATA_DIR": str(tmp_path / "embedded"), "SECRET_KEY": "embedded-secret",
                      "RATELIMIT_ENABLED": "false"})
    ctx = app.extensions["peerline"]
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    result = app.test_cli_runner().invoke(args=["sms", "simulate", "+1 555 010 1101", "help"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == notify.text(ctx, "sms_reply_help")
    # The same signed request from outside (no simulation mark in the WSGI environ): refused.
    form = {"MessageSid": "SM" + "3" * 32, "From": "+15550101101", "Body": "STOP"}
    signature = RequestValidator(twilio.simulation_key(ctx.settings)).compute_signature(
        ctx.settings["PUBLIC_BASE_URL"] + twilio.SMS_PATH, form)
    answer = app.test_client().post(twilio.SMS_PATH, data=form, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 403
    assert not ctx.db.is_opted_out("sms", "+15550101101")
