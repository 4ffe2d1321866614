"""The purge (issue 12): after retention_days nothing identifying is left in any sink, each
purge leaves one receipt, a failing sink is retried and said to be pending, and a purge killed
halfway finishes on the next run with one receipt.

Canary strings fill every personal field of two crisis requests (one reached by SMS, one by
email, each with a delivery report); the cases are closed, the clock moves past the retention
period, and `flask purge run` runs. Then no canary byte is left in any file under DATA_DIR
(database and WAL read raw), the database's tables, the outbox, the logs, the fake Airtable's
records and revision history, or what the fake Twilio and SendGrid still hold; and the calls
made are exactly the documented DELETEs and erase job. On SQLite, PostgreSQL and Airtable.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa

from integrations import airtable, database
from integrations.twilio import STATUS_PATH
from test_sendgrid import MAIL_URL, NOW, SENDGRID, post_events
from test_twilio import ACCOUNT, MESSAGES_URL, TWILIO, assert_twilio_contract, sign
from tests.fake_airtable import FakeAirtable
from workflows import notify, offers, purge

AIRTABLE_URL = "https://api.airtable.test"
BASE_ID = "appPurgeTest0001"
ERASE_URL = "https://api.sendgrid.com/v3/recipients/erasejob"
DELETE_URL = re.compile(rf"https://api\.twilio\.com/2010-04-01/Accounts/{ACCOUNT}/Messages/(SM[0-9a-f]{{32}})\.json")

PERSONAL = {
    "requester_name": "Qzx9Name Person", "department": "Qzx9Dept",
    "referrer_name": "Qzx9Referrer", "referrer_email": "qzx9ref@example.org", "referrer_phone": "+1 555 013 7915",
    "story": "Qzx9Story of what happened",      # an answer no field takes: kept only in the inbox
}
PHONE_A, EMAIL_B = "+1 555 013 7914", "qzx9mail@example.org"


def leaks(data) -> list[str]:
    raw = data if isinstance(data, bytes) else str(data).encode()
    low = raw.lower()
    found = [c for c in (b"qzx9", b"5550137914", b"5550137915", b"555 013 791", b"555-013-791") if c in low]
    return found


@pytest.fixture
def overrides(overrides):
    return {**overrides, **TWILIO, **SENDGRID}


class Providers:
    """Twilio and SendGrid as stores of what they keep: messages by SID, recipients by address."""

    def __init__(self, mocked):
        self.mocked, self.messages, self.recipients = mocked, {}, {}
        self.sids = (f"SM{n:032x}" for n in itertools.count(1))
        self.in_progress: set[str] = set()
        self.kill_on_delete = False
        mocked.add_callback("POST", MESSAGES_URL, callback=self.create, content_type="application/json")
        mocked.add_callback("POST", MAIL_URL, callback=self.send, content_type="application/json")
        mocked.add_callback("DELETE", DELETE_URL, callback=self.delete, content_type="application/json")
        mocked.add_callback("POST", ERASE_URL, callback=self.erase, content_type="application/json")

    def create(self, request):
        form = {k: v[0] for k, v in parse_qs(request.body).items()}
        sid = next(self.sids)
        self.messages[sid] = {"to": form["To"], "body": form["Body"]}
        return 201, {}, json.dumps({"sid": sid, "status": "queued", "to": form["To"], "account_sid": ACCOUNT})

    def send(self, request):
        body = json.loads(request.body)
        for p in body["personalizations"]:
            for to in p["to"]:
                self.recipients.setdefault(to["email"].lower(), []).append(body["subject"])
        return 202, {"X-Message-Id": f"msg{len(self.recipients):09d}abc"}, ""

    def delete(self, request):
        if self.kill_on_delete:
            raise SystemExit("the worker was killed")
        sid = DELETE_URL.fullmatch(request.url).group(1)
        if sid in self.in_progress:
            return 400, {}, json.dumps({"code": 20009, "message": "Cannot delete message in progress",
                                        "status": 400})
        if self.messages.pop(sid, None) is None:
            return 404, {}, json.dumps({"code": 20404, "message": "not found", "status": 404})
        return 204, {}, ""

    def erase(self, request):
        addresses = json.loads(request.body)["email_addresses"]
        assert isinstance(addresses, list) and 1 <= len(addresses) <= 5000
        for a in addresses:
            self.recipients.pop(a.lower(), None)
        return 202, {}, json.dumps({"job_id": "erase-job-7"})

    def purge_calls(self, since: int):
        return [c for c in self.mocked.calls[since:] if c.request.url.startswith(("https://api.twilio.com",
                                                                                  "https://api.sendgrid.com"))]


@pytest.fixture(params=["sqlite", "postgres", "airtable"])
def backend(request, overrides, mocked):
    """The backend name; sets DATABASE_URL for PostgreSQL before the app is built."""
    if request.param == "postgres":
        overrides["DATABASE_URL"] = request.getfixturevalue("pg_url")
    return request.param


@pytest.fixture
def setup(backend, app, ctx, mocked):
    fake = None
    if backend == "airtable":
        fake = FakeAirtable(token="patPurge")
        fake.add_base(BASE_ID)
        fake.install(mocked, AIRTABLE_URL)
        ctx.store = airtable.AirtableCaseStore("patPurge", BASE_ID, api_url=AIRTABLE_URL,
                                               throttle=airtable.Throttle(0))
        airtable.init_base(ctx.store)
    from cli import read_roster_csv
    from config import settings as settings_module
    loaded, errors = read_roster_csv(settings_module.ROOT / "config" / "sample_roster.csv")
    ctx.store.import_roster(loaded)
    ctx.clock.pin(NOW)
    return fake


def two_closed_cases(client, ctx, providers, run_worker) -> list:
    """One crisis request reached by SMS, one by email, with delivery reports; both closed."""
    common = {**PERSONAL, "for_whom": "Self", "institution": "NCH", "role": "Nurse", "specialty": "ICU",
              "flyer": "nch-4north", "urgency": "Crisis", "crisis": "yes"}
    ctx.db.record_submission(source="web", source_key="web:purge-a", payload={"answers": {
        **common, "requester_phone": PHONE_A, "preferred_contact": "Text message"}})
    ctx.db.record_submission(source="web", source_key="web:purge-b", payload={"answers": {
        **common, "requester_email": EMAIL_B, "preferred_contact": "Email"}})
    run_worker()
    notify.run_due(ctx)
    cases = ctx.store.list_cases()
    assert len(cases) == 2
    rows = ctx.db.ledger_rows()
    sms = next(r for r in rows if r.kind == "crisis_resources" and r.channel == "sms")
    status = {"MessageSid": sms.provider_id, "MessageStatus": "delivered", "To": "+15550137914",
              "From": "+15550100200", "AccountSid": ACCOUNT}
    assert client.post(STATUS_PATH, data=status, headers={"X-Twilio-Signature": sign(STATUS_PATH, status)}).status_code == 200
    mail = next(r for r in rows if r.kind == "crisis_resources" and r.channel == "email")
    event = [{"email": EMAIL_B, "timestamp": int(NOW.timestamp()), "event": "delivered", "sg_event_id": "ZGVsaXZlcmVkLTE",
              "sg_message_id": "msgPurge0001.filter-1", "peerline_key": mail.key, "response": f"250 ok {EMAIL_B}"}]
    assert post_events(client, json.dumps(event).encode()).status_code == 200
    for case in cases:
        offers.close(ctx, case.case_id, actor="test")
    assert any(leaks(r.recipient) for r in ctx.db.ledger_rows())
    return ctx.store.list_cases()


def everything_left(ctx, fake, providers) -> list[tuple[str, list]]:
    """Every place a canary could remain, with what it found."""
    found = []
    data_dir = Path(ctx.settings["DATA_DIR"])
    for path in data_dir.rglob("*"):
        if path.is_file():
            found.append((f"file {path.name}", leaks(path.read_bytes())))
    with ctx.db.engine.connect() as conn:
        for table in database.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)).mappings():
                if table.name == "opt_outs":
                    continue
                found.append((f"table {table.name}", leaks(json.dumps(dict(row), default=str))))
    found.append(("outbox", leaks(json.dumps([dataclasses.asdict(m) for m in ctx.db.outbox_list()], default=str))))
    if fake is not None:
        for table in ("Cases", "Messages", "Events"):
            found.append((f"airtable {table}", leaks(json.dumps(fake.records(BASE_ID, table)))))
            found.append((f"airtable {table} history", leaks(json.dumps(fake.revisions(BASE_ID, table)))))
    found.append(("twilio", leaks(json.dumps(providers.messages))))
    found.append(("sendgrid", leaks(json.dumps(providers.recipients))))
    return [(where, what) for where, what in found if what]


def test_nothing_identifying_outlives_the_retention_period(backend, setup, client, ctx, runner, mocked,
                                                           run_worker, caplog):
    caplog.set_level(logging.DEBUG)
    providers = Providers(mocked)
    cases = two_closed_cases(client, ctx, providers, run_worker)
    sids = sorted(r.provider_id for r in ctx.db.ledger_rows() if r.channel == "sms")
    assert len(sids) >= 2 and len(providers.messages) == len(sids)
    assert EMAIL_B in providers.recipients

    # Not yet: one day short of the retention period, nothing is due.
    ctx.clock.advance(timedelta(days=ctx.program.program.retention_days - 1))
    assert purge.due(ctx) == []
    preview = runner.invoke(args=["purge", "run", "--dry-run"])
    assert "Nothing to purge" in preview.output
    ctx.clock.advance(timedelta(days=1, minutes=1))
    preview = runner.invoke(args=["purge", "run", "--dry-run"])
    assert preview.exit_code == 0 and all(c.case_id in preview.output for c in cases)
    assert "SMS provider" in preview.output and not leaks(preview.output)
    assert all(ctx.store.find_case(case_id=c.case_id).requester_name for c in cases)   # a dry run removes nothing

    since = len(mocked.calls)
    result = runner.invoke(args=["purge", "run"])
    assert result.exit_code == 0, result.output
    assert not leaks(result.output)

    # The outside calls: one DELETE per SMS record of these cases, one erase job with the
    # requesters' addresses (not the roster's), and nothing else.
    calls = providers.purge_calls(since)
    deletes = [c for c in calls if c.request.method == "DELETE"]
    erases = [c for c in calls if c.request.url == ERASE_URL]
    assert len(deletes) + len(erases) == len(calls)
    assert sorted(DELETE_URL.fullmatch(c.request.url).group(1) for c in deletes) == sids
    for c in deletes:
        assert_twilio_contract(c.request)
    assert 1 <= len(erases) <= len(cases)      # one erase job per case that had addresses
    erased = {a for c in erases for a in json.loads(c.request.body)["email_addresses"]}
    assert erased == {EMAIL_B, PERSONAL["referrer_email"]}

    # The cases keep their de-identified fields, lose the rest, and carry one receipt.
    for before in cases:
        after = ctx.store.find_case(case_id=before.case_id)
        assert after.purged_at == ctx.now()
        for name in ("requester_name", "requester_phone", "requester_email", "referrer_name", "referrer_phone",
                     "referrer_email", "department", "suggested_supporters"):
            assert not getattr(after, name), name
        for name in ("source", "source_response_id", "submitted_at", "status", "urgency", "for_whom",
                     "institution", "role", "specialty", "preferred_contact", "flyer", "closed_at"):
            assert getattr(after, name) == getattr(before, name), name
        receipts = [e.event for e in ctx.store.list_events(before.case_id) if e.event.startswith("Purged:")]
        assert len(receipts) == 1 and receipts[0].endswith("pending: none"), receipts
        assert "Twilio" in receipts[0] and "SendGrid" in receipts[0] and "erase-job-7" in receipts[0]
        # The audit trail stays with the case.
        assert any(e.event.startswith("Case created") for e in ctx.store.list_events(before.case_id))

    assert everything_left(ctx, setup, providers) == []
    if setup is not None:   # Airtable: the old records are in the base's trash (7 days), as the README says
        assert any(leaks(json.dumps(r)) for r in setup.trash[BASE_ID])
    for record in caplog.records:
        assert not leaks(record.getMessage()), (record.name, record.getMessage())

    # Done is done: another run finds nothing and calls nobody.
    since = len(mocked.calls)
    again = runner.invoke(args=["purge", "run"])
    assert again.exit_code == 0 and "Nothing to purge" in again.output
    assert providers.purge_calls(since) == []


def test_a_message_in_progress_is_deleted_on_the_next_run_and_the_receipt_says_so(setup, client, ctx, runner,
                                                                                 mocked, run_worker):
    providers = Providers(mocked)
    cases = two_closed_cases(client, ctx, providers, run_worker)
    stuck = sorted(providers.messages)[0]
    providers.in_progress.add(stuck)
    ctx.clock.advance(timedelta(days=ctx.program.program.retention_days, minutes=1))

    first = runner.invoke(args=["purge", "run"])
    assert first.exit_code == 1 and "pending" in first.output and "SMS provider" in first.output
    case_id = next(r.case_id for r in ctx.db.ledger_rows() if r.provider_id == stuck)
    case = ctx.store.find_case(case_id=case_id)
    assert case.purged_at is None and not case.requester_name         # de-identified, not yet reported purged
    receipt = [e.event for e in ctx.store.list_events(case_id) if e.event.startswith("Purged:")]
    assert len(receipt) == 1 and receipt[0].endswith("pending: SMS provider")

    providers.in_progress.clear()
    ctx.clock.advance(timedelta(days=1))
    second = runner.invoke(args=["purge", "run"])
    assert second.exit_code == 0, second.output
    events = [e.event for e in ctx.store.list_events(case_id)]
    assert sum(e.startswith("Purged:") for e in events) == 1
    assert sum(e.startswith("Purge finished:") for e in events) == 1
    assert ctx.store.find_case(case_id=case_id).purged_at is not None
    assert stuck not in providers.messages
    assert all(ctx.store.find_case(case_id=c.case_id).purged_at for c in cases)


def test_a_purge_killed_halfway_finishes_on_the_next_run_with_one_receipt(setup, client, ctx, mocked, run_worker):
    providers = Providers(mocked)
    cases = two_closed_cases(client, ctx, providers, run_worker)
    ctx.clock.advance(timedelta(days=ctx.program.program.retention_days, minutes=1))
    providers.kill_on_delete = True
    with pytest.raises(SystemExit):
        purge.run(ctx)
    providers.kill_on_delete = False
    purge.run(ctx)
    for case in cases:
        events = [e.event for e in ctx.store.list_events(case.case_id)]
        assert sum(e.startswith("Purged:") for e in events) == 1, events
        assert not any(e.startswith("Purge finished:") for e in events)
        assert ctx.store.find_case(case_id=case.case_id).purged_at is not None
    assert everything_left(ctx, setup, providers) == []


def test_a_colleague_who_declined_is_purged_at_once_and_open_cases_keep_their_address(setup, ctx, mocked):
    from workflows.model import Case, Event
    providers = Providers(mocked)
    declined = ctx.store.create_case(Case(case_id="PS-7001", source="web", source_response_id="web:declined",
                                          submitted_at=ctx.now(), status="Withdrawn", for_whom="Colleague",
                                          requester_name="Qzx9Colleague", requester_email="shared@example.org",
                                          referrer_email="qzx9ref@example.org"))
    ctx.store.create_case(Case(case_id="PS-7002", source="web", source_response_id="web:open",
                               submitted_at=ctx.now(), status="New", requester_email="shared@example.org"))
    ctx.store.add_events([Event(case_id=declined.case_id, event=purge.COLLEAGUE_DECLINED, at=ctx.now())])
    assert [c.case_id for c, reason in purge.due(ctx)] == ["PS-7001"]
    purge.run(ctx)
    erases = [json.loads(c.request.body)["email_addresses"] for c in mocked.calls if c.request.url == ERASE_URL]
    assert erases == [["qzx9ref@example.org"]]       # the open case's address is not erased
    assert ctx.store.find_case(case_id="PS-7002").requester_email == "shared@example.org"
    assert ctx.store.find_case(case_id="PS-7001").purged_at is not None


def test_withdrawn_without_closed_at_counts_from_its_last_event(setup, ctx, mocked):
    from workflows.model import Case, Event
    Providers(mocked)
    ctx.store.create_case(Case(case_id="PS-7003", source="web", source_response_id="web:w", status="Withdrawn",
                               submitted_at=ctx.now() - timedelta(days=400)))
    ctx.store.add_events([Event(case_id="PS-7003", event="Withdrawn by a coordinator", at=ctx.now())])
    assert purge.due(ctx) == []
    ctx.clock.advance(timedelta(days=ctx.program.program.retention_days))
    assert [c.case_id for c, _ in purge.due(ctx)] == ["PS-7003"]


def test_twilio_retention_options_are_sent_only_when_set(mocked, ctx):
    from integrations import twilio
    values = {**ctx.settings, "TWILIO_CONTENT_RETENTION": "discard", "TWILIO_ADDRESS_RETENTION": "obfuscate"}
    mocked.add("POST", MESSAGES_URL, json={"sid": "SM" + "a" * 32, "status": "queued"}, status=201)
    twilio.TwilioSender.from_settings(values, ctx.db).send(message_key="k", channel="sms", to="+15550100111",
                                                          case_id="PS-1", subject="", body="ref 1")
    plain = {**ctx.settings}
    twilio.TwilioSender.from_settings(plain, ctx.db).send(message_key="k2", channel="sms", to="+15550100111",
                                                         case_id="PS-1", subject="", body="ref 1")
    first, second = [c.request for c in mocked.calls if c.request.url == MESSAGES_URL]
    assert assert_twilio_contract(first)["ContentRetention"] == "discard"
    assert parse_qs(first.body)["AddressRetention"] == ["obfuscate"]
    assert "ContentRetention" not in assert_twilio_contract(second)
    with pytest.raises(ValueError, match="TWILIO_CONTENT_RETENTION"):
        twilio.TwilioSender.from_settings({**values, "TWILIO_CONTENT_RETENTION": "forget"}, ctx.db)
