"""The message ledger's rules: templates that cannot leak, quiet hours in the program's time
zone, exactly once under crashes and races, delivery reports that never go backwards."""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import program as program_config
from config import settings as settings_module
from config.program import Program, QuietHours
from workflows import notify
from workflows.model import MessageRecord

NEW_YORK = ZoneInfo("America/New_York")
PROGRAM = Program.model_validate({"program": {"name": "P", "timezone": "America/New_York"},
                                  "quiet_hours": {"start": "21:00", "end": "07:00"}})
VALUES = {"ref": "4821", "deadline": "Tue 24 Nov 09:00 EST", "link": "L"}


def write(tmp_path, text: str):
    path = tmp_path / "messages.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- templates

@pytest.mark.parametrize("toml,expected", [
    ('[a]\nchannel = "sms"\nbody = "Call {requester_name} at {requester_phone}"',
     "[a] body uses {requester_name}, {requester_phone}, which a sms may not carry"),
    ('[a]\nchannel = "sms"\nbody = "Ref {ref} in {institution}"', "[a] body uses {institution}, which a sms"),
    ('[a]\nchannel = "sms"\nbody = "{ref.__class__}"', "[a] body uses {ref.__class__}"),
    ('[a]\nchannel = "email"\nsubject = "For {requester_email}"\nbody = "x"', "[a] subject uses {requester_email}"),
    ('[a]\nchannel = "email"\nbody = "{department}"', "[a] is an email without a subject"),
    ('[a]\nchannel = "whatsapp"\nbody = "x"', "[a] channel must be one of ['email', 'sms'], not 'whatsapp'"),
    ('[a]\nchannel = "sms"\nbody = "ref {ref"', "[a] body: "),
])
def test_a_template_that_could_leak_stops_the_start_with_a_clear_message(tmp_path, toml, expected):
    with pytest.raises(notify.TemplateError) as err:
        notify.load_templates(write(tmp_path, toml))
    assert expected in str(err.value)
    assert str(tmp_path / "messages.toml") in str(err.value)


def test_every_broken_template_is_named_at_once(tmp_path):
    path = write(tmp_path, '[a]\nchannel = "sms"\nbody = "{specialty}"\n[b]\nchannel = "sms"\nbody = "{flyer}"\n')
    with pytest.raises(notify.TemplateError) as err:
        notify.load_templates(path)
    assert "[a] body uses {specialty}" in str(err.value) and "[b] body uses {flyer}" in str(err.value)
    assert "allowed in sms: crisis_resources, deadline, link, program, ref" in str(err.value)


def test_the_service_does_not_start_with_such_a_template(tmp_path, monkeypatch, overrides):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "messages.toml").write_text('[x]\nchannel = "sms"\nbody = "{requester_name}"\n')
    values = settings_module.load(overrides)
    monkeypatch.setattr(settings_module, "ROOT", tmp_path)     # where build_context reads messages.toml
    from integrations import build_context
    with pytest.raises(notify.TemplateError, match=r"\[x\] body uses \{requester_name\}"):
        build_context(values)


def test_the_shipped_templates_load_and_sms_ones_carry_no_request_detail():
    templates = notify.load_templates(settings_module.ROOT / "config" / "messages.toml")
    for template in templates.values():
        assert template.fields <= notify.ALLOWED_PLACEHOLDERS[template.channel]
    assert {"crisis_reviewer_sms", "crisis_requester_sms", "crisis_lead_email", "unreachable_lead_email"} <= set(templates)


def test_sending_without_a_value_the_template_needs_is_refused_before_any_intent(ctx):
    with pytest.raises(notify.TemplateError, match="needs values for deadline"):
        notify.send(ctx, case_id="PS-1", kind="k", template="new_case_reviewer_sms",
                    recipient=notify.Recipient(key="r", role="Reviewer", phone="+15550101125"),
                    values={"ref": "1", "link": "l"})
    assert ctx.db.ledger_rows() == []


def test_only_the_values_a_template_uses_are_kept_with_the_intent(ctx):
    notify.send(ctx, case_id="PS-1", kind="k", template="new_case_reviewer_sms",
                recipient=notify.Recipient(key="r", role="Reviewer", phone="+15550101125"),
                values={**VALUES, "institution": "Northgate", "role": "Nurse"})
    [row] = ctx.db.ledger_rows()
    assert set(json.loads(row.values_json)) == {"ref", "deadline"}     # what the SMS says, no more


# ---------------------------------------------------------------- quiet hours

@pytest.mark.parametrize("local,until", [
    (datetime(2026, 11, 23, 20, 59), None),
    (datetime(2026, 11, 23, 21, 0), datetime(2026, 11, 24, 7, 0)),
    (datetime(2026, 11, 23, 23, 45), datetime(2026, 11, 24, 7, 0)),
    (datetime(2026, 11, 24, 3, 0), datetime(2026, 11, 24, 7, 0)),
    (datetime(2026, 11, 24, 6, 59), datetime(2026, 11, 24, 7, 0)),
    (datetime(2026, 11, 24, 7, 0), None),
    (datetime(2026, 3, 8, 1, 30), datetime(2026, 3, 8, 7, 0)),     # the night clocks go forward
    (datetime(2026, 11, 1, 1, 30), datetime(2026, 11, 1, 7, 0)),    # and back
])
def test_quiet_hours_are_read_in_the_program_time_zone(local, until):
    now = local.replace(tzinfo=NEW_YORK).astimezone(timezone.utc)
    expected = until.replace(tzinfo=NEW_YORK).astimezone(timezone.utc) if until else None
    assert notify.quiet_until(PROGRAM, now) == expected


def test_quiet_hours_within_one_day_and_none():
    day = PROGRAM.model_copy(update={"quiet_hours": QuietHours(start="12:00", end="13:00")})
    noon = datetime(2026, 11, 23, 12, 30, tzinfo=NEW_YORK)
    assert notify.quiet_until(day, noon) == datetime(2026, 11, 23, 13, 0, tzinfo=NEW_YORK)
    assert notify.quiet_until(PROGRAM.model_copy(update={"quiet_hours": QuietHours()}), noon) is None
    with pytest.raises(ValueError, match=r'\[quiet_hours\] start and end must be times like "21:00"'):
        program_config.parse({"program": {"name": "P"}, "quiet_hours": {"start": "9pm", "end": "7am"}})


def test_the_embedded_outbox_shows_messages_at_once_even_at_night(ctx):
    ctx.clock.pin(datetime(2026, 11, 24, 2, 0, tzinfo=NEW_YORK))
    assert notify.send(ctx, case_id="PS-1", kind="k", template="new_case_reviewer_sms",
                       recipient=notify.Recipient(key="r", role="Reviewer", phone="+15550101125"),
                       values=VALUES) == "sent"
    assert len(ctx.db.outbox_list()) == 1


# ---------------------------------------------------------------- helpers

def test_crisis_resources_carry_988_and_the_programs_own(ctx):
    text = notify.crisis_resources(ctx.program)
    assert "988" in text and "911" in text
    for resource in ctx.program.crisis.resources:
        assert resource.name in text and resource.phone in text


# ---------------------------------------------------------------- exactly once

def _intend(ctx, key="PS-1:k:r:sms", **kw):
    record = MessageRecord(key=key, case_id="PS-1", kind="k", channel="sms", recipient_role="Reviewer")
    ctx.db.ledger_intend(record, "+15550101125", template="new_case_reviewer_sms", values=VALUES, now=ctx.now(), **kw)
    return key


def test_an_intent_left_by_a_dead_worker_is_sent_once_by_the_periodic_task(ctx):
    start = datetime(2026, 11, 23, 14, 0, tzinfo=timezone.utc)
    ctx.clock.pin(start)
    key = _intend(ctx)                 # the worker died right after recording the intent
    assert notify.run_due(ctx) == 0    # too fresh: its own worker may still be about to send it
    ctx.clock.pin(start + timedelta(minutes=2))
    notify.run_due(ctx)
    notify.run_due(ctx)
    assert [m.message_key for m in ctx.db.outbox_list()] == [key]
    assert ctx.db.ledger_get(key).status == "sent"


class SlowSender:
    """A provider that takes its time, so two workers overlap inside the send."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def send(self, **kw):
        self.calls += 1
        time.sleep(0.3)
        return self.inner.send(**kw)

    def find_sent(self, **kw):
        return self.inner.find_sent(**kw)


def test_two_workers_racing_send_one_message(ctx):
    slow = ctx.senders["sms"] = SlowSender(ctx.senders["sms"])
    key = _intend(ctx)
    results = []

    def worker():
        try:
            results.append(notify.deliver(ctx, key))
        except notify.MessageInFlight:
            results.append("in flight")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow.calls == 1 and len(ctx.db.outbox_list()) == 1
    assert sorted(results) == ["in flight"] * 3 + ["sent"]


def test_a_template_removed_after_the_intent_fails_the_message_not_the_worker(ctx, roster):
    key = _intend(ctx)
    ctx.templates = {k: v for k, v in ctx.templates.items() if k != "new_case_reviewer_sms"}
    assert notify.deliver(ctx, key) == "failed"
    assert ctx.db.ledger_get(key).error == "template 'new_case_reviewer_sms' missing"


def test_a_mirror_that_was_down_is_caught_up(ctx):
    seen, down = [], {"yes": True}

    def mirror(records):
        if down["yes"]:
            raise ConnectionError("store down")
        seen.extend((r.key, r.status) for r in records)

    ctx.store.mirror_messages = mirror
    key = _intend(ctx)
    assert notify.deliver(ctx, key) == "sent"          # the send does not fail with the mirror
    assert ctx.db.ledger_get(key).mirror_due
    down["yes"] = False
    notify.run_due(ctx)
    assert seen == [(key, "sent")] and not ctx.db.ledger_get(key).mirror_due


# ---------------------------------------------------------------- delivery reports

REPORTS = ["sent", "deferred", "delivered", "undelivered", "failed", "bounced", "dropped", "read"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports=st.lists(st.sampled_from(REPORTS), min_size=1, max_size=8))
def test_the_furthest_report_wins_whatever_the_order_and_repeats(ctx, reports):
    key = _intend(ctx, key=f"PS-1:k:{uuid.uuid4().hex}:sms")
    notify.deliver(ctx, key)
    for status in reports:
        notify.record_delivery(ctx, key, status)
    final = ctx.db.ledger_get(key).status
    best = max(notify.STATUS_RANK[s] for s in reports)
    first_best = next(s for s in reports if notify.STATUS_RANK[s] == best)
    assert final == (first_best if best > notify.STATUS_RANK["sent"] else "sent")


def test_a_send_row_left_without_a_claim_is_recovered(ctx):
    """A worker killed in the middle of recording a send must not leave a row nobody may claim."""
    key = _intend(ctx)
    ctx.db.ledger_update(key, status="sending", claimed_until=None, attempts=1)
    notify.run_due(ctx)
    assert ctx.db.ledger_get(key).status == "sent" and len(ctx.db.outbox_list()) == 1
