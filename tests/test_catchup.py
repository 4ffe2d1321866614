"""Catch-up (issue 15): a form submission whose notice never arrived still becomes one case.

The job `catch_up_forms` asks REDCap (date-range record export) and Qualtrics (response export)
what was completed since it last read, and records each through the webhooks' idempotent
intake under the same source key. Outside APIs are mocked at the HTTP layer with the stored
fixtures (tests/fixtures/README.md); the clock is the Context's.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl

import pytest
from conftest import load_fixture

REDCAP_API = "https://redcap.example.edu/api/"
QUALTRICS_API = "https://iad1.qualtrics.com"
SURVEY = "SV_eA1b2C3d4E5f6G7"
RID = "R_3kFq8ZxW2mN9pLb"
EXPORT = f"{QUALTRICS_API}/API/v3/surveys/{SURVEY}/export-responses"
NOW = datetime(2026, 3, 4, 18, 0, tzinfo=timezone.utc)
REDCAP = {"REDCAP_API_URL": REDCAP_API, "REDCAP_API_TOKEN": "8F2A6C0E4B9D1F3A5C7E9B0D2F4A6C8E",
          "REDCAP_PROJECT_ID": "12", "REDCAP_WEBHOOK_TOKEN": "hook-token-9d8c7b6a5f4e3d2c1b0a"}
QUALTRICS = {"QUALTRICS_API_URL": QUALTRICS_API, "QUALTRICS_API_TOKEN": "qualtrics-api-token-0f9e8d",
             "QUALTRICS_WEBHOOK_TOKEN": "hook-token-4a7b9c2d8e1f6a3b5c7d9e0f"}


def fixture_json(system: str, name: str):
    return json.loads(load_fixture(system, name)[0])


@pytest.fixture
def overrides(overrides, request):
    extra = {}
    for marker in request.node.iter_markers("configured"):
        for system in marker.args:
            extra.update({"redcap": REDCAP, "qualtrics": QUALTRICS}[system])
    return {**overrides, **extra}


@pytest.fixture
def clock(ctx):
    ctx.clock.pin(NOW)
    return ctx.clock


class FakeRedcap:
    """POST REDCAP_API_URL: the catch-up's date-range export (dateRangeBegin present) answers
    `since`, the worker's one-record export answers records__complete.json."""

    def __init__(self, mocked):
        self.since = (200, fixture_json("redcap", "records__catchup_since.json"))
        self.requests: list[dict] = []
        mocked.add_callback("POST", REDCAP_API, callback=self._answer)

    def _answer(self, request):
        params = dict(parse_qsl(request.body, keep_blank_values=True))
        self.requests.append(params)
        if "dateRangeBegin" in params:
            status, body = self.since
        else:
            status, body = 200, fixture_json("redcap", "records__complete.json")
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    @property
    def exports(self) -> list[dict]:
        return [r for r in self.requests if "dateRangeBegin" in r]


@pytest.fixture
def redcap(mocked):
    return FakeRedcap(mocked)


def qualtrics_export(mocked, file_fixture: str = "export_responses__file_one.json", status: int = 200):
    mocked.post(EXPORT, json=fixture_json("qualtrics", "export_responses__started.json"), status=status)
    progress = fixture_json("qualtrics", "export_responses__progress_complete.json")
    started = fixture_json("qualtrics", "export_responses__started.json")
    mocked.get(f"{EXPORT}/{started['result']['progressId']}", json=progress)
    mocked.get(f"{EXPORT}/{progress['result']['fileId']}/file", json=fixture_json("qualtrics", file_fixture))
    mocked.get(f"{QUALTRICS_API}/API/v3/surveys/{SURVEY}/responses/{RID}",
               json=fixture_json("qualtrics", "response__complete.json"))


def run_job(runner):
    result = runner.invoke(args=["jobs", "run", "catch_up_forms"])
    assert result.exit_code == 0, result.output
    return result


# ---- REDCap ----

@pytest.mark.configured("redcap")
def test_redcap_trigger_that_never_arrived_becomes_one_case(ctx, roster, redcap, clock, runner, run_worker):
    run_job(runner)
    [export] = redcap.exports
    assert export["content"] == "record" and export["fields[0]"] == "peer_support_request_complete"
    # Server time is unknown: asked from UTC minus 12 h, before the first look-back and overlap.
    assert export["dateRangeBegin"] == "2026-03-03 05:50:00"
    [row] = ctx.db.list_inbox()                       # record 105 is not Complete
    assert row.source == "redcap" and row.source_key == "redcap:12:104"
    assert ctx.queued == [row.id]
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.source_response_id == "redcap:12:104" and case.requester_name == "Zebulon"
    assert ctx.db.catchup_read_to("redcap") == NOW


@pytest.mark.configured("redcap")
def test_redcap_trigger_that_arrived_and_the_job_make_one_case(client, ctx, roster, redcap, clock, runner, run_worker):
    data, content_type = load_fixture("redcap", "det__survey_complete.txt")
    assert client.post(f"/webhooks/redcap?token={REDCAP['REDCAP_WEBHOOK_TOKEN']}", data=data,
                       content_type=content_type).status_code == 200
    run_worker()
    run_job(runner)
    run_worker()
    assert len(ctx.db.list_inbox()) == 1 and len(ctx.store.list_cases()) == 1


@pytest.mark.configured("redcap")
def test_redcap_longitudinal_repeating_row_gets_the_triggers_key(client, ctx, redcap, clock, runner):
    redcap.since = (200, fixture_json("redcap", "records__catchup_longitudinal_repeating.json"))
    run_job(runner)
    data, content_type = load_fixture("redcap", "det__longitudinal_repeating.txt")
    client.post(f"/webhooks/redcap?token={REDCAP['REDCAP_WEBHOOK_TOKEN']}", data=data, content_type=content_type)
    [row] = ctx.db.list_inbox()
    assert row.source_key == "redcap:12:221:intake_arm_1:2"
    assert ctx.db.inbox_row(row.id).payload["repeat_instrument"] == "peer_support_request"


@pytest.mark.configured("redcap")
def test_redcap_failure_keeps_the_place_and_the_next_run_asks_again(ctx, roster, redcap, clock, runner,
                                                                    run_worker, caplog):
    caplog.set_level(logging.INFO, logger="peerline")
    redcap.since = (200, [])
    run_job(runner)                                   # 18:00: read to here
    clock.advance(timedelta(minutes=10))
    redcap.since = (503, {"error": "down"})
    run_job(runner)                                   # 18:10: REDCap down, the place is kept
    assert ctx.db.list_inbox() == [] and ctx.db.catchup_read_to("redcap") == NOW
    assert "catch-up redcap failed" in caplog.text and "HTTP 503" in caplog.text
    clock.advance(timedelta(minutes=10))
    redcap.since = (200, fixture_json("redcap", "records__catchup_since.json"))
    run_job(runner)                                   # 18:20: asks again from 18:00
    _, failed, again = redcap.exports
    assert again["dateRangeBegin"] == failed["dateRangeBegin"] == "2026-03-04 05:50:00"
    assert len(ctx.db.list_inbox()) == 1
    run_worker()
    assert len(ctx.store.list_cases()) == 1
    assert ctx.db.catchup_read_to("redcap") == NOW + timedelta(minutes=20)
    # Logs carry counts only: no record id, no token.
    assert "104" not in caplog.text and REDCAP["REDCAP_API_TOKEN"] not in caplog.text


@pytest.mark.configured("redcap")
def test_redcap_next_run_reads_from_the_last_and_spends_one_call(ctx, redcap, clock, runner):
    redcap.since = (200, [])
    run_job(runner)
    clock.advance(timedelta(minutes=10))
    run_job(runner)
    assert len(redcap.requests) == 2
    # From the last run's start (18:00 UTC), less the overlap and the server-time margin.
    assert redcap.requests[1]["dateRangeBegin"] == "2026-03-04 05:50:00"


# ---- Qualtrics ----

@pytest.mark.configured("qualtrics")
def test_qualtrics_notice_that_never_arrived_becomes_one_case(ctx, roster, mocked, clock, runner, run_worker):
    qualtrics_export(mocked)
    run_job(runner)
    start = json.loads(mocked.calls[0].request.body)
    assert start == {"format": "json", "compress": False, "startDate": "2026-03-03T17:50:00Z"}
    [row] = ctx.db.list_inbox()
    assert row.source == "qualtrics" and row.source_key == f"qualtrics:{RID}"
    assert ctx.db.inbox_row(row.id).payload == {"survey_id": SURVEY, "response_id": RID}
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.source_response_id == f"qualtrics:{RID}"


@pytest.mark.configured("qualtrics")
def test_qualtrics_notice_that_arrived_and_the_job_make_one_case(client, ctx, roster, mocked, clock, runner,
                                                                 run_worker):
    qualtrics_export(mocked)
    data, content_type = load_fixture("qualtrics", "completed_response__plain.txt")
    assert client.post(f"/webhooks/qualtrics?token={QUALTRICS['QUALTRICS_WEBHOOK_TOKEN']}", data=data,
                       content_type=content_type).status_code == 200
    run_job(runner)
    run_worker()
    assert len(ctx.db.list_inbox()) == 1 and len(ctx.store.list_cases()) == 1


@pytest.mark.configured("qualtrics")
def test_qualtrics_failure_keeps_the_place(ctx, mocked, clock, runner, caplog):
    caplog.set_level(logging.INFO, logger="peerline")
    qualtrics_export(mocked, status=500)
    run_job(runner)
    assert ctx.db.list_inbox() == [] and ctx.db.catchup_read_to("qualtrics") is None
    assert "catch-up qualtrics failed" in caplog.text and "HTTP 500" in caplog.text


# ---- neither ----

def test_nothing_configured_makes_no_call_and_keeps_no_place(ctx, mocked, clock, runner):
    run_job(runner)
    assert len(mocked.calls) == 0
    assert ctx.db.list_inbox() == []
    assert ctx.db.catchup_read_to("redcap") is None and ctx.db.catchup_read_to("qualtrics") is None


def test_the_job_is_listed_every_ten_minutes(runner):
    result = runner.invoke(args=["jobs", "run"])
    assert "catch_up_forms" in result.output and "every 10 minutes" in result.output
