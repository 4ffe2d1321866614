"""Approval in Airtable: the webhook ping (MAC checked over the raw body, then a poll queued,
nothing fetched while Airtable waits), the poll that offers the case, `flask airtable webhook
create|list|refresh`, and the refresh before Airtable's 7-day expiry. Airtable is the fake
(tests/fake_airtable.py) through `responses`, so pyairtable's real request code runs."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import peerline_root
from cli import read_roster_csv
from config.settings import ROOT
from tests.conftest import load_fixture
from tests.test_airtable import BASE, TOKEN, URL, fake, make_store  # noqa: F401  (fixture)
from tests.test_offers import AVERY, sms
from workflows import tasks
from workflows.model import Case

PUBLIC = "https://peerline.example.org"
HOOK_URL = PUBLIC + "/webhooks/airtable"




@pytest.fixture
def overrides(overrides, fake):
    return {**overrides, "AIRTABLE_API_KEY": TOKEN, "AIRTABLE_BASE_ID": BASE, "AIRTABLE_API_URL": URL,
            "PUBLIC_BASE_URL": PUBLIC}


@pytest.fixture
def base(fake):
    """The base as a coordinator set it up: tables made by init, the sample roster imported."""
    from integrations import airtable
    setup = make_store()
    airtable.init_base(setup)
    setup.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    return setup


@pytest.fixture
def queued(ctx):
    """What the web process queued for the worker (Context.run_soon)."""
    jobs = []
    ctx.run_soon = jobs.append
    return jobs


@pytest.fixture
def worker(ctx):
    tasks.use_context(ctx)
    yield peerline_root.queue(ctx.settings)
    tasks.use_context(None)


@pytest.fixture
def hook(base, fake, runner, ctx):
    """The webhook made by `flask airtable webhook create`, its secret set as the setting."""
    result = runner.invoke(args=["airtable", "webhook", "create"])
    assert result.exit_code == 0, result.output
    secret = result.output.split("AIRTABLE_WEBHOOK_SECRET=")[1].split()[0]
    ctx.settings["AIRTABLE_WEBHOOK_SECRET"] = secret
    [made] = fake.webhooks[BASE]
    return made


def utcnow() -> datetime:
    """Airtable's own clock (the fake server's), not ours: the real time."""
    return datetime.now(timezone.utc)


def ping(client, body: bytes, mac: str | None):
    headers = {"Content-Type": "application/json"}
    if mac is not None:
        headers["X-Airtable-Content-MAC"] = mac
    return client.post("/webhooks/airtable", data=body, headers=headers)


def approved_case(base, fake) -> Case:
    """A New case, then a reviewer sets Status to Approved in the Airtable app."""
    now = utcnow()
    case = base.create_case(Case(case_id="PS-4821", source="web", source_response_id="web:hook", status="New",
                                 for_whom="Self", requester_name="Zebulon", requester_phone="+1 555 010 0123",
                                 preferred_contact="Text message", institution="NCH", role="Nurse",
                                 role_preference="Same", submitted_at=now, review_due=now + timedelta(hours=72)))
    base.update_case(case.case_id, status="Approved")
    return case


def test_webhook_create_watches_case_status_and_referral_and_prints_the_secret_once(fake, base, runner, ctx):
    result = runner.invoke(args=["airtable", "webhook", "create"])
    assert result.exit_code == 0, result.output
    [made] = fake.webhooks[BASE]
    cases = fake.table(BASE, "Cases")
    watched = [next(f["id"] for f in cases["fields"] if f["name"] == name) for name in ("Status", "Tier 3 Referral")]
    assert made["notificationUrl"] == HOOK_URL
    assert made["specification"] == {"options": {"filters": {
        "dataTypes": ["tableData"], "recordChangeScope": cases["id"], "watchDataInFieldIds": watched,
        "fromSources": ["client", "automation"]}}}
    assert f"AIRTABLE_WEBHOOK_SECRET={made['macSecretBase64']}" in result.output
    again = runner.invoke(args=["airtable", "webhook", "create"])
    assert again.exit_code != 0 and "--replace" in again.output and len(fake.webhooks[BASE]) == 1
    replaced = runner.invoke(args=["airtable", "webhook", "create", "--replace"])
    assert replaced.exit_code == 0 and f"deleted webhook {made['id']}" in replaced.output
    [new] = fake.webhooks[BASE]
    assert new["id"] != made["id"] and new["macSecretBase64"] in replaced.output


def test_webhook_create_needs_an_https_public_address(base, runner, ctx):
    ctx.settings["PUBLIC_BASE_URL"] = "http://localhost:5000"
    result = runner.invoke(args=["airtable", "webhook", "create"])
    assert result.exit_code != 0 and "https" in result.output


def test_an_approval_in_airtable_is_offered_after_a_genuine_ping(client, ctx, fake, base, hook, queued, worker,
                                                                runner):
    case = approved_case(base, fake)
    body = fake.ping_body(BASE, hook["id"])
    before = len(fake.requests)
    answer = ping(client, body, fake.mac(BASE, hook["id"], body))
    assert answer.status_code == 200 and answer.get_data() == b""
    assert queued == ["poll_approvals"]
    assert len(fake.requests) == before                 # nothing fetched while Airtable waits
    worker.poll_approvals_now.call_local()              # what the worker does with the queued job
    [record] = fake.records(BASE, "Cases")
    avery = next(s for s in base.supporters() if s.name == "Avery Chen")
    assert record["fields"]["Status"] == "Offered" and record["fields"]["Assigned Supporter"] == [avery.record_id]
    assert "Offer Expires" in record["fields"]
    [offer] = [m for m in ctx.db.outbox_list() if m.recipient == AVERY]
    assert f"YES {case.ref}" in offer.body
    assert any(r["fields"]["Kind"] == "offer-1" for r in fake.records(BASE, "Messages"))
    assert {"Approval seen (Status set to Approved)", "Offered to Avery Chen by SMS (offer 1), answer due "
            + offer.body.rsplit("by ", 1)[1].rstrip(".")} <= {e["fields"]["Event"] for e in fake.records(BASE, "Events")}
    # The supporter's YES assigns it in Airtable and stamps their Last Assigned At.
    assert sms(runner, AVERY, f"YES {case.ref}").startswith(f"Thank you: ref {case.ref} is yours")
    [record] = fake.records(BASE, "Cases")
    assert record["fields"]["Status"] == "Assigned" and "Offer Expires" not in record["fields"]
    supporter = next(r for r in fake.records(BASE, "Supporters") if r["id"] == avery.record_id)
    assert "Last Assigned At" in supporter["fields"]


def test_the_minute_poll_offers_an_approval_even_without_a_ping(ctx, fake, base, worker):
    approved_case(base, fake)
    worker.poll_approvals.call_local()
    worker.poll_approvals.call_local()
    assert fake.records(BASE, "Cases")[0]["fields"]["Status"] == "Offered"
    assert len([m for m in ctx.db.outbox_list() if m.recipient == AVERY]) == 1


@pytest.mark.parametrize("spoil", ["no header", "wrong secret", "one byte changed", "re-serialized",
                                   "secret not set", "not hex"])
def test_a_ping_without_a_genuine_mac_is_403_and_nothing_is_fetched_or_queued(client, ctx, fake, base, hook, queued,
                                                                              spoil):
    approved_case(base, fake)
    body = fake.ping_body(BASE, hook["id"])
    mac = fake.mac(BASE, hook["id"], body)
    if spoil == "no header":
        mac = None
    elif spoil == "wrong secret":
        mac = "hmac-sha256=" + hmac.new(b"guess", body, hashlib.sha256).hexdigest()
    elif spoil == "one byte changed":
        body = body.replace(b'"timestamp":"', b'"timestamp":"1')
    elif spoil == "re-serialized":
        body = json.dumps(json.loads(body), indent=1).encode()
    elif spoil == "secret not set":
        ctx.settings["AIRTABLE_WEBHOOK_SECRET"] = None
    else:
        mac = "hmac-sha256=" + "z" * 64
    before = len(fake.requests)
    answer = ping(client, body, mac)
    assert answer.status_code == 403 and "X-Airtable-Content-MAC" in answer.get_json()["error"]
    assert queued == [] and len(fake.requests) == before
    assert fake.records(BASE, "Cases")[0]["fields"]["Status"] == "Approved"


def test_the_documented_ping_signed_with_its_secret_is_accepted(client, ctx, queued):
    body = load_fixture("airtable", "webhook_ping__plain.json")[0]
    secret = json.loads(load_fixture("airtable", "webhooks_create__created.json")[0])["macSecretBase64"]
    ctx.settings["AIRTABLE_WEBHOOK_SECRET"] = secret
    mac = "hmac-sha256=" + hmac.new(base64.b64decode(secret), body, hashlib.sha256).hexdigest()
    assert ping(client, body, mac).status_code == 200 and queued == ["poll_approvals"]


def test_a_genuine_ping_without_ids_is_400_naming_the_field(client, ctx, queued):
    secret = base64.b64encode(b"k" * 32).decode()
    ctx.settings["AIRTABLE_WEBHOOK_SECRET"] = secret
    for fixture, field in (("webhook_ping__missing_webhook_id.json", "webhook.id"), (None, "body")):
        body = load_fixture("airtable", fixture)[0] if fixture else b"not json"
        mac = "hmac-sha256=" + hmac.new(b"k" * 32, body, hashlib.sha256).hexdigest()
        answer = ping(client, body, mac)
        assert answer.status_code == 400 and field in answer.get_json()["error"]
    assert queued == []


def test_a_genuine_ping_nested_at_any_depth_is_400_naming_the_body(client, ctx, queued):
    secret = base64.b64encode(b"k" * 32).decode()
    ctx.settings["AIRTABLE_WEBHOOK_SECRET"] = secret
    for body in (b"[" * 100_000, b'{"base": ' * 20_000):
        mac = "hmac-sha256=" + hmac.new(b"k" * 32, body, hashlib.sha256).hexdigest()
        answer = ping(client, body, mac)
        assert answer.status_code == 400 and answer.get_json()["field"] == "body"
    assert queued == []


def test_a_ping_for_another_base_is_ignored(client, ctx, fake, base, hook, queued):
    body = fake.ping_body("appSomeoneElse01", hook["id"])
    assert ping(client, body, fake.mac(BASE, hook["id"], body)).status_code == 200
    assert queued == []


def test_the_worker_refreshes_the_webhook_before_it_expires(ctx, fake, base, hook, worker, runner):
    fake.now = lambda: utcnow() + timedelta(days=6, hours=23)
    ctx.clock.advance(timedelta(days=6, hours=23))     # our clock and Airtable's agree
    hook["areNotificationsEnabled"] = False            # Airtable turned them off after failures
    worker.refresh_airtable_webhooks.call_local()
    worker.refresh_airtable_webhooks.call_local()
    [kept] = fake.webhooks[BASE]
    assert kept["expirationTime"].startswith((fake.now() + timedelta(days=7)).strftime("%Y-%m-%dT%H"))
    assert kept["areNotificationsEnabled"] is True
    listed = runner.invoke(args=["airtable", "webhook", "list"]).output
    assert kept["id"] in listed and "ours" in listed and "enabled=True" in listed
    # Unrefreshed past its 7 days Airtable drops it: the command says what to do.
    fake.now = lambda: utcnow() + timedelta(days=15)
    ctx.clock.advance(timedelta(days=8, hours=1))
    worker.refresh_airtable_webhooks.call_local()
    result = runner.invoke(args=["airtable", "webhook", "refresh"])
    assert result.exit_code != 0 and "webhook create" in result.output


def test_webhook_refresh_by_hand_says_the_new_expiry(fake, base, hook, runner):
    result = runner.invoke(args=["airtable", "webhook", "refresh"])
    expires = datetime.fromisoformat(fake.webhooks[BASE][0]["expirationTime"].replace("Z", "+00:00"))
    shown = expires.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M %Z")     # program.toml's zone
    assert result.exit_code == 0 and f"refreshed {hook['id']}: expires" in result.output and shown in result.output


def test_the_fakes_webhook_answers_have_the_documented_shapes(fake, base):
    import requests
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    spec = {"options": {"filters": {"dataTypes": ["tableData"]}}}
    created = session.post(f"{URL}/v0/bases/{BASE}/webhooks", json={"notificationUrl": HOOK_URL,
                                                                     "specification": spec}).json()
    assert set(created) == set(json.loads(load_fixture("airtable", "webhooks_create__created.json")[0]))
    assert base64.b64decode(created["macSecretBase64"], validate=True)
    listed = session.get(f"{URL}/v0/bases/{BASE}/webhooks").json()
    documented = json.loads(load_fixture("airtable", "webhooks_list__one.json")[0])
    assert set(listed) == set(documented)
    assert set(listed["webhooks"][0]) == set(documented["webhooks"][0])
    refreshed = session.post(f"{URL}/v0/bases/{BASE}/webhooks/{created['id']}/refresh").json()
    assert set(refreshed) == set(json.loads(load_fixture("airtable", "webhook_refresh__extended.json")[0]))
    from pyairtable.models.webhook import Webhook
    api = make_store().api
    for shown in (listed["webhooks"][0], documented["webhooks"][0]):      # pyairtable's model reads both
        Webhook.from_api(shown, api, context=api.base(BASE))
    bad = session.post(f"{URL}/v0/bases/{BASE}/webhooks", json={"notificationUrl": HOOK_URL,
                                                                 "specification": {"options": {"filters": {}}}})
    assert bad.status_code == 422


def test_cases_approve_and_close_work_on_airtable_too(ctx, fake, base, runner):
    now = utcnow()
    base.create_case(Case(case_id="PS-4821", source="web", source_response_id="web:cli", status="New",
                          for_whom="Self", requester_phone="+15550100123", preferred_contact="Text message",
                          institution="NCH", role="Nurse", submitted_at=now, review_due=now + timedelta(hours=72)))
    result = runner.invoke(args=["cases", "approve", "4821", "--supporter", "Kai Romero"])
    assert result.exit_code == 0 and "offered to Kai Romero" in result.output, result.output
    kai = next(s for s in base.supporters() if s.name == "Kai Romero")
    [record] = fake.records(BASE, "Cases")
    assert record["fields"]["Status"] == "Offered" and record["fields"]["Assigned Supporter"] == [kai.record_id]
    assert {"Approved, supporter chosen: Kai Romero"} <= {e["fields"]["Event"] for e in fake.records(BASE, "Events")}
    assert runner.invoke(args=["cases", "close", "PS-4821"]).exit_code == 0
    [record] = fake.records(BASE, "Cases")
    assert record["fields"]["Status"] == "Closed" and "Closed At" in record["fields"]
