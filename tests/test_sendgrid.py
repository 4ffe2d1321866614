"""SendGrid: email built by the sendgrid library's Mail helpers and posted with requests (so the
`responses` mock sees it), checked against SendGrid's OpenAPI spec; failures sorted; the
signed Event Webhook verified, deduplicated and kept in order.
"""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import load_fixture
from integrations import sendgrid
from workflows import notify

CONTRACTS = Path(__file__).parent / "contracts"
MAIL_URL = "https://api.sendgrid.com/v3/mail/send"
MESSAGE_ID = "W2c8xY4aQ1yVbAqNRwGHZg"
KEY = "PS-4821:new_case:reviewer:9:email"          # the key in tests/fixtures/sendgrid/events__*.json
NOW = datetime(2026, 11, 23, 14, 5, 10, tzinfo=timezone.utc)   # just after the fixtures' events

PRIVATE = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(PRIVATE.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
SENDGRID = {"SENDGRID_API_KEY": "SG.test-key.5f0e", "SENDGRID_FROM_EMAIL": "peer-support@example.org",
            "SENDGRID_WEBHOOK_PUBLIC_KEY": PUBLIC_KEY, "PUBLIC_BASE_URL": "https://peerline.example.org"}


# ---------------------------------------------------------------- helpers other tests use

@lru_cache(maxsize=1)
def sendgrid_spec():
    from openapi_core import OpenAPI
    with open(CONTRACTS / "sendgrid_mail_v3.json") as fh:
        return OpenAPI.from_dict(json.load(fh))


def assert_sendgrid_contract(request) -> dict:
    """Validate a mail send we made against SendGrid's spec; returns its JSON body."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest
    result = sendgrid_spec().unmarshal_request(RequestsOpenAPIRequest(request))
    assert not result.errors, result.errors
    return json.loads(request.body)


def sendgrid_accepts(mocked, url=MAIL_URL, message_id=MESSAGE_ID):
    mocked.add("POST", url, status=202, body=b"", headers={"X-Message-Id": message_id})


def mail_posts(mocked, url=MAIL_URL):
    return [c for c in mocked.calls if c.request.method == "POST" and c.request.url == url]


def sign_events(body: bytes, timestamp: str | None = None, private=PRIVATE) -> dict:
    timestamp = timestamp or str(int(NOW.timestamp()))
    signature = base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    return {sendgrid.SIGNATURE_HEADER: signature, sendgrid.TIMESTAMP_HEADER: timestamp}


def post_events(client, body: bytes, headers=None):
    return client.post(sendgrid.EVENTS_PATH, data=body, content_type="application/json",
                       headers=sign_events(body) if headers is None else headers)


@pytest.fixture
def overrides(overrides):
    return {**overrides, **SENDGRID}


@pytest.fixture
def clock(ctx):
    ctx.clock.pin(NOW)
    return ctx.clock


def lead(ctx):
    return next(r for r in ctx.store.reviewers() if r.program_lead)


def email_to(ctx, person, *, case_id="PS-4821", kind="new_case"):
    return notify.send(ctx, case_id=case_id, kind=kind, template="new_case_reviewer_email",
                       recipient=notify.Recipient(key=f"reviewer:{person.record_id}", role="Reviewer",
                                                  phone=person.phone, email=person.email),
                       values={"ref": case_id.split("-")[1], "deadline": "Tue 24 Nov 09:00 EST", "link": "L",
                               "institution": "Northgate Community Hospital", "urgency": "Routine", "role": "Nurse"})


def a_reviewer(ctx):
    return next(r for r in ctx.store.reviewers() if not r.program_lead)


# ---------------------------------------------------------------- sending

def test_mail_send_request_is_what_sendgrid_documents(ctx, roster, mocked, clock):
    sendgrid_accepts(mocked)
    person = a_reviewer(ctx)
    assert email_to(ctx, person) == "sent"
    [call] = mail_posts(mocked)
    body = assert_sendgrid_contract(call.request)
    assert call.request.headers["Authorization"] == "Bearer SG.test-key.5f0e"
    assert call.request.req_kwargs["timeout"] == 10.0
    assert body["from"] == {"email": "peer-support@example.org"}
    key = f"PS-4821:new_case:reviewer:{person.record_id}:email"
    assert body["personalizations"] == [{"to": [{"email": person.email}], "custom_args": {"peerline_key": key}}]
    assert body["subject"] == "New peer support request, ref 4821"
    assert body["content"][0]["type"] == "text/plain" and "ref 4821" in body["content"][0]["value"]
    assert sorted(body["categories"]) == ["new_case", "peerline"] and "custom_args" not in body
    assert body["tracking_settings"]["click_tracking"]["enable"] is False
    assert body["tracking_settings"]["open_tracking"]["enable"] is False
    row = ctx.db.ledger_get(key)
    assert row.status == "sent" and row.provider_id == MESSAGE_ID


def test_sendgrid_api_url_setting_points_the_client_elsewhere(overrides, mocked):
    from app import create_app
    app = create_app({**overrides, "SENDGRID_API_URL": "https://sendgrid-fake.test/"})
    ctx = app.extensions["peerline"]
    sendgrid_accepts(mocked, url="https://sendgrid-fake.test/v3/mail/send")
    status = notify.send(ctx, case_id="PS-1000", kind="k", template="crisis_requester_email",
                         recipient=notify.Recipient(key="requester", role="Requester", email="r@example.org"),
                         values={"ref": "1000"})
    assert status == "sent"
    assert [c.request.url for c in mocked.calls] == ["https://sendgrid-fake.test/v3/mail/send"]


def test_400_fails_at_once_and_tells_a_program_lead_once(ctx, roster, mocked, clock):
    mocked.add("POST", MAIL_URL, status=400, body=load_fixture("sendgrid", "api__mail_send__400.json")[0],
               content_type="application/json")
    sendgrid_accepts(mocked)
    person = a_reviewer(ctx)
    assert email_to(ctx, person) == "failed"
    key = f"PS-4821:new_case:reviewer:{person.record_id}:email"
    assert ctx.db.ledger_get(key).error == "SendGrid 400"
    for hours in (1, 2, 30):
        clock.pin(NOW + timedelta(hours=hours))
        notify.run_due(ctx)
    first, alert = mail_posts(mocked)
    alert_body = json.loads(alert.request.body)
    assert alert_body["personalizations"][0]["to"] == [{"email": lead(ctx).email}]
    assert alert_body["subject"] == "Could not reach a reviewer by email, ref 4821"
    assert sorted(alert_body["categories"]) == ["peerline", "unreachable"]
    assert person.email not in alert.request.body.decode()


@pytest.mark.parametrize("failure", [{"status": 500}, {"status": 503}, {"status": 429},
                                     {"status": 401, "body": load_fixture("sendgrid", "api__mail_send__401.json")[0]},
                                     {"body": requests.exceptions.ReadTimeout("read timed out")}])
def test_transient_failure_is_retried_later_not_in_a_loop(ctx, roster, mocked, clock, failure):
    mocked.add("POST", MAIL_URL, **failure)
    sendgrid_accepts(mocked)
    person = a_reviewer(ctx)
    assert email_to(ctx, person) == "retry"
    assert len(mail_posts(mocked)) == 1
    clock.pin(NOW + timedelta(minutes=3))
    notify.run_due(ctx)
    key = f"PS-4821:new_case:reviewer:{person.record_id}:email"
    assert ctx.db.ledger_get(key).status == "sent"
    assert len(mail_posts(mocked)) == 2


def test_401_says_which_setting_to_check(ctx, roster, mocked, clock, caplog):
    mocked.add("POST", MAIL_URL, status=401, body=load_fixture("sendgrid", "api__mail_send__401.json")[0])
    email_to(ctx, a_reviewer(ctx))
    assert "SENDGRID_API_KEY" in caplog.text


def test_send_that_reached_sendgrid_before_a_crash_is_found_by_its_events(client, ctx, roster, mocked, clock):
    """The worker dies after SendGrid accepted: its events carry our key back, and the retry
    finds the message id there instead of sending a second email."""
    def accept_then_die(request):
        raise SystemExit("worker killed")

    mocked.add_callback("POST", MAIL_URL, callback=accept_then_die)
    person = next(r for r in ctx.store.reviewers() if r.record_id == "9")
    with pytest.raises(SystemExit):
        email_to(ctx, person)
    assert ctx.db.ledger_get(KEY).status == "sending"
    processed = json.loads(load_fixture("sendgrid", "events__delivered.json")[0])[:1]
    body = json.dumps(processed).encode()
    assert post_events(client, body).status_code == 200
    clock.pin(NOW + timedelta(seconds=int(ctx.settings["INBOX_LEASE_SECONDS"]) + 1))
    notify.run_due(ctx)
    assert len(mail_posts(mocked)) == 1
    row = ctx.db.ledger_get(KEY)
    assert row.status == "sent" and row.provider_id == MESSAGE_ID


# ---------------------------------------------------------------- event webhook

@pytest.fixture
def sent_email(ctx, roster, mocked, clock):
    sendgrid_accepts(mocked)
    person = next(r for r in ctx.store.reviewers() if r.record_id == "9")
    assert email_to(ctx, person) == "sent"
    return KEY


@pytest.mark.parametrize("fixture,status,error", [
    ("events__delivered.json", "delivered", ""),
    ("events__deferred.json", "deferred", ""),
    ("events__bounce.json", "bounced", "SendGrid bounce 5.1.1"),
    ("events__dropped.json", "dropped", "SendGrid dropped 5.0.0"),
])
def test_signed_events_update_the_status(client, ctx, sent_email, fixture, status, error):
    body, _ = load_fixture("sendgrid", fixture)
    answer = post_events(client, body)
    assert answer.status_code == 200
    row = ctx.db.ledger_get(sent_email)
    assert row.status == status and row.error == error
    assert "@" not in row.error       # the bounce reason quotes the address: never kept


def test_duplicate_and_out_of_order_events_change_nothing(client, ctx, sent_email):
    delivered, _ = load_fixture("sendgrid", "events__delivered.json")
    deferred, _ = load_fixture("sendgrid", "events__deferred.json")
    assert post_events(client, delivered).get_json() == {"received": 2, "applied": 1, "duplicates": 0}
    assert post_events(client, delivered).get_json() == {"received": 2, "applied": 0, "duplicates": 2}
    assert post_events(client, deferred).status_code == 200          # late: the mail is already delivered
    assert ctx.db.ledger_get(sent_email).status == "delivered"


def test_bounce_tells_a_program_lead_once(client, ctx, sent_email, mocked):
    body, _ = load_fixture("sendgrid", "events__bounce.json")
    post_events(client, body)
    notify.run_due(ctx)
    notify.run_due(ctx)
    alerts = [json.loads(c.request.body) for c in mail_posts(mocked)][1:]
    assert [a["personalizations"][0]["to"][0]["email"] for a in alerts] == [lead(ctx).email]


def test_events_reach_the_messages_mirror(client, ctx, sent_email):
    mirrored = []
    ctx.store.mirror_messages = lambda records: mirrored.extend((r.key, r.status) for r in records)
    post_events(client, load_fixture("sendgrid", "events__delivered.json")[0])
    notify.run_due(ctx)         # the periodic job: reports are mirrored together, within a minute
    assert mirrored == [(sent_email, "delivered")]


def test_events_for_mail_that_is_not_ours_are_ignored(client, ctx, sent_email):
    answer = post_events(client, load_fixture("sendgrid", "events__not_ours.json")[0])
    assert answer.status_code == 200 and answer.get_json()["applied"] == 0
    assert ctx.db.ledger_get(sent_email).status == "sent"


def test_bad_signatures_are_403_and_change_nothing(client, ctx, sent_email):
    body, _ = load_fixture("sendgrid", "events__bounce.json")
    reserialized = json.dumps(json.loads(body)).encode()
    other_key = ec.generate_private_key(ec.SECP256R1())
    cases = [
        (body, {}),                                                       # no headers
        (body[:-2] + b" ]", sign_events(body)),                           # one byte changed
        (reserialized, sign_events(body)),                                # same data, other bytes
        (body, sign_events(body, private=other_key)),                     # someone else's key
        (body, {**sign_events(body), sendgrid.SIGNATURE_HEADER: "not base64 !!"}),
        (body, {**sign_events(body), sendgrid.SIGNATURE_HEADER: base64.b64encode(b"junk").decode()}),
        (body, {**sign_events(body), sendgrid.TIMESTAMP_HEADER: "yesterday"}),
        (body, sign_events(body, str(int(NOW.timestamp()) - 301))),      # stale
        (body, sign_events(body, str(int(NOW.timestamp()) + 301))),      # from the future
    ]
    for sent, headers in cases:
        answer = client.post(sendgrid.EVENTS_PATH, data=sent, content_type="application/json", headers=headers)
        assert answer.status_code == 403, headers
    assert ctx.db.ledger_get(sent_email).status == "sent"
    assert post_events(client, body, sign_events(body, str(int(NOW.timestamp()) - 299))).status_code == 200


def test_without_a_public_key_nothing_is_accepted(overrides, mocked):
    from app import create_app
    app = create_app({**overrides, "SENDGRID_WEBHOOK_PUBLIC_KEY": None})
    body, _ = load_fixture("sendgrid", "events__delivered.json")
    answer = app.test_client().post(sendgrid.EVENTS_PATH, data=body, content_type="application/json",
                                    headers=sign_events(body, str(int(time.time()))))
    assert answer.status_code == 403


@pytest.mark.parametrize("body,field", [(b"{not json", "body"), (b'{"event": "delivered"}', "body"),
                                        (b'["delivered"]', "body")])
def test_malformed_signed_body_is_400(client, clock, body, field):
    answer = post_events(client, body)
    assert answer.status_code == 400 and answer.get_json()["error"].startswith(field)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'[{"event": ' * 20_000])
def test_signed_body_nested_at_any_depth_is_400_naming_the_body(client, clock, body):
    answer = post_events(client, body)
    assert answer.status_code == 400 and answer.get_json()["field"] == "body"


def test_an_event_name_that_is_not_text_is_400_naming_it(client, ctx, clock, sent_email):
    body = json.dumps([{"event": ["delivered"], "sg_event_id": "ev-1", sendgrid.KEY_ARG: sent_email}]).encode()
    answer = post_events(client, body)
    assert answer.status_code == 400 and answer.get_json()["field"] == "body[0].event"
    assert ctx.db.ledger_get(sent_email).status == "sent"


def test_database_out_of_reach_is_503_with_retry_after(client, ctx, clock, monkeypatch):
    import sqlalchemy as sa

    def unreachable(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT INTO webhook_events ...", {}, ConnectionError("refused"))
    monkeypatch.setattr(ctx.db, "remember_webhook_event", unreachable)
    answer = post_events(client, load_fixture("sendgrid", "events__delivered.json")[0])
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0


def test_sendgrid_published_test_vector_verifies():
    """The known answer from SendGrid's own eventwebhook tests (all its helper libraries)."""
    verifier = sendgrid.verifier("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepx"
                                 "o7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==")
    payload = '{"category":"example_payload","event":"test_event","message_id":"message_id"}'
    signature = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
    assert verifier.verify_signature(payload, signature, "1588788367")
    assert not verifier.verify_signature(payload, signature, "1588788368")
