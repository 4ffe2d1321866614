"""REDCap: a request instrument saved Complete becomes exactly one case, re-fetched from our
own REDCAP_API_URL with our own token.

Triggers and API answers are the stored fixtures in tests/fixtures/redcap; the REDCap API is
mocked at the HTTP layer, so the real requests code runs.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from urllib.parse import parse_qsl, urlencode

import pytest
from conftest import load_fixture

from config.settings import ROOT

API = "https://redcap.example.edu/api/"
API_TOKEN = "8F2A6C0E4B9D1F3A5C7E9B0D2F4A6C8E"
HOOK_TOKEN = "hook-token-9d8c7b6a5f4e3d2c1b0a"
METADATA_KEYS = ["field_name", "form_name", "section_header", "field_type", "field_label",
                 "select_choices_or_calculations", "field_note", "text_validation_type_or_show_slider_number",
                 "text_validation_min", "text_validation_max", "identifier", "branching_logic", "required_field",
                 "custom_alignment", "question_number", "matrix_group_name", "matrix_ranking", "field_annotation"]


@pytest.fixture
def overrides(overrides):
    return {**overrides, "REDCAP_API_URL": API, "REDCAP_API_TOKEN": API_TOKEN, "REDCAP_PROJECT_ID": "12",
            "REDCAP_WEBHOOK_TOKEN": HOOK_TOKEN, "RETRY_MAX_ATTEMPTS": "3"}


def fixture_json(name: str):
    return json.loads(load_fixture("redcap", name)[0])


class FakeRedcap:
    """Answers POST REDCAP_API_URL by its `content` parameter, from the stored fixtures."""

    def __init__(self, mocked):
        self.answers = {"record": (200, fixture_json("records__complete.json")),
                        "metadata": (200, fixture_json("metadata__request_instrument.json")),
                        "project": (200, fixture_json("project__info.json"))}
        self.requests: list[dict] = []
        mocked.add_callback("POST", API, callback=self._answer)

    def _answer(self, request):
        params = dict(parse_qsl(request.body, keep_blank_values=True))
        self.requests.append(params)
        status, body = self.answers[params["content"]]
        return status, {"Content-Type": "application/json"}, json.dumps(body)


@pytest.fixture
def redcap(mocked):
    return FakeRedcap(mocked)


def post(client, name: str, token: str | None = HOOK_TOKEN, body: bytes | None = None):
    data, content_type = load_fixture("redcap", name)
    url = "/webhooks/redcap" + (f"?token={token}" if token is not None else "")
    return client.post(url, data=data if body is None else body, content_type=content_type)


def edited(name: str, **changes) -> bytes:
    """A stored trigger with fields changed (value None: field left out)."""
    pairs = parse_qsl(load_fixture("redcap", name)[0].decode(), keep_blank_values=True)
    pairs = [(k, changes.get(k, v)) for k, v in pairs if changes.get(k, v) is not None]
    return urlencode(pairs).encode()


def test_complete_survey_becomes_one_case_with_mapped_answers(client, ctx, roster, redcap, run_worker):
    answer = post(client, "det__survey_complete.txt")
    assert answer.status_code == 200 and answer.get_json() == {"status": "received"}
    [row] = ctx.db.list_inbox()
    assert row.source == "redcap" and row.source_key == "redcap:12:104"
    stored = ctx.db.inbox_row(row.id).payload
    assert stored["record"] == "104" and "redcap_url" not in stored and "username" not in stored
    assert ctx.queued == [row.id] and redcap.requests == []

    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "New" and case.problems == ""
    assert case.source == "redcap" and case.source_response_id == "redcap:12:104"
    assert (case.for_whom, case.requester_name, case.requester_phone, case.preferred_contact) == \
        ("Self", "Zebulon", "+15550100123", "Text message")
    assert (case.institution, case.department, case.role, case.specialty) == \
        ("NCH", "Surgery", "Nurse", "Perioperative")
    assert (case.role_preference, case.department_preference, case.urgency, case.flyer) == \
        ("Same", "Different", "Routine", "ICU-3")
    assert case.outside_my_institution is True          # from the outside_hospital___1 column
    [fetch] = redcap.requests
    assert fetch == {"token": API_TOKEN, "content": "record", "format": "json", "returnFormat": "json",
                     "type": "flat", "rawOrLabel": "raw", "records[0]": "104",
                     "forms[0]": "peer_support_request"}
    assert ctx.db.list_inbox()[0].status == "done"


def test_page_saves_and_other_instruments_are_ignored_and_resaves_are_one_case(client, ctx, roster, redcap,
                                                                               run_worker):
    for name in ("det__page_save_partial.txt", "det__other_instrument.txt"):
        answer = post(client, name)
        assert answer.status_code == 200 and answer.get_json() == {"status": "ignored"}
    assert post(client, "det__survey_complete.txt", body=edited("det__survey_complete.txt",
                peer_support_request_complete="1")).get_json() == {"status": "ignored"}
    assert ctx.db.list_inbox() == []
    for _ in range(3):   # REDCap fires again on every later save of the completed form
        assert post(client, "det__survey_complete.txt").status_code == 200
    run_worker()
    assert len(ctx.db.list_inbox()) == 1 and len(ctx.store.list_cases()) == 1
    assert len(redcap.requests) == 1


def test_longitudinal_repeating_record_uses_the_row_of_the_triggering_event_and_instance(
        client, ctx, roster, redcap, run_worker):
    redcap.answers["record"] = (200, fixture_json("records__longitudinal_repeating.json"))
    assert post(client, "det__longitudinal_repeating.txt").status_code == 200
    [row] = ctx.db.list_inbox()
    assert row.source_key == "redcap:12:221:intake_arm_1:2"
    run_worker()
    [case] = ctx.store.list_cases()
    assert (case.requester_name, case.institution, case.urgency) == ("Second request", "SBMC", "Urgent")
    assert case.outside_my_institution is True
    [fetch] = redcap.requests
    assert fetch["events[0]"] == "intake_arm_1" and fetch["records[0]"] == "221"


def test_redcap_url_in_the_trigger_is_never_called(client, ctx, roster, redcap, mocked, run_worker, caplog):
    caplog.set_level(logging.WARNING)
    mocked.add_callback("POST", re.compile(r"https://redcap\.attacker\.example/.*"), callback=lambda r: (200, {}, "[]"))
    mocked.add_callback("GET", re.compile(r"https://redcap\.attacker\.example/.*"), callback=lambda r: (200, {}, "[]"))
    assert post(client, "det__foreign_redcap_url.txt").status_code == 200
    run_worker()
    assert len(ctx.store.list_cases()) == 1
    assert mocked.calls and all(c.request.url == API for c in mocked.calls)
    assert not any("attacker" in c.request.url for c in mocked.calls)
    assert "names another REDCap server" in caplog.text and "attacker" not in caplog.text


@pytest.mark.parametrize("token", [None, "", "wrong", HOOK_TOKEN.upper()])
def test_wrong_or_missing_token_is_403_and_nothing_stored(client, ctx, redcap, token):
    assert post(client, "det__survey_complete.txt", token=token).status_code == 403
    assert ctx.db.list_inbox() == [] and redcap.requests == []


def test_other_project_is_403_and_nothing_fetched(client, ctx, redcap):
    answer = post(client, "det__wrong_project.txt")
    assert answer.status_code == 403 and answer.get_json() == {"error": "unknown project"}
    assert ctx.db.list_inbox() == [] and redcap.requests == []


@pytest.mark.parametrize("body,field", [
    (load_fixture("redcap", "det__missing_record.txt")[0], "record"),
    (edited("det__survey_complete.txt", project_id=None), "project_id"),
    (edited("det__survey_complete.txt", instrument=None), "instrument"),
    (edited("det__survey_complete.txt", peer_support_request_complete=None), "peer_support_request_complete"),
    (edited("det__survey_complete.txt", record="104'); DROP TABLE inbox;--"), "record"),
    (edited("det__longitudinal_repeating.txt", redcap_repeat_instance="two"), "redcap_repeat_instance"),
])
def test_malformed_trigger_is_400_naming_the_field(client, ctx, body, field):
    answer = post(client, "det__survey_complete.txt", body=body)
    assert answer.status_code == 400 and answer.get_json()["field"] == field
    assert ctx.db.list_inbox() == []


def test_database_out_of_reach_is_503_with_retry_after(client, ctx, redcap, monkeypatch):
    import sqlalchemy as sa

    def unreachable(**kwargs):
        raise sa.exc.OperationalError("INSERT INTO inbox ...", {}, ConnectionError("refused"))
    monkeypatch.setattr(ctx.db, "record_submission", unreachable)
    answer = post(client, "det__survey_complete.txt")
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0 and "error" in answer.get_json()
    assert redcap.requests == []


def test_body_over_the_limit_is_413(client, ctx):
    assert post(client, "det__survey_complete.txt", body=b"record=" + b"1" * 300_000).status_code == 413
    assert ctx.db.list_inbox() == []


def test_route_without_a_token_setting_is_404(tmp_path):
    from app import create_app
    from integrations import database
    app = create_app({"DATA_DIR": str(tmp_path / "var"), "SECRET_KEY": "t", "RATELIMIT_ENABLED": "false"})
    try:
        body, content_type = load_fixture("redcap", "det__survey_complete.txt")
        assert app.test_client().post("/webhooks/redcap?token=", data=body,
                                      content_type=content_type).status_code == 404
    finally:
        database.dispose_engines()


def test_unreadable_choices_and_nasty_text_need_attention_and_are_kept_exactly(
        client, ctx, roster, redcap, run_worker, caplog):
    caplog.set_level(logging.DEBUG)
    redcap.answers["record"] = (200, fixture_json("records__unreadable_choices.json"))
    post(client, "det__survey_complete.txt")
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "Needs attention"
    assert "Role Preference: unreadable answer (role_preference = 7)" in case.problems
    assert "Institution: unreadable answer (institution = not a choice code)" in case.problems
    assert case.requester_name == "O'Brien \"Ed\" }, TRUE()) 🙂"
    assert case.department == "Surgery\\ICU', {x}"
    assert case.outside_my_institution is False and case.institution == ""
    for text in ("O'Brien", "Northgate", "Surgery"):
        assert text not in case.problems and text not in caplog.text


def test_refused_token_parks_at_once_and_emails_the_leads_once(client, ctx, roster, redcap, run_worker, runner):
    redcap.answers["record"] = (403, fixture_json("error__forbidden.json"))
    post(client, "det__survey_complete.txt")
    run_worker()
    [row] = ctx.db.list_inbox()
    assert row.status == "parked" and row.attempts == 1 and len(redcap.requests) == 1
    assert "HTTP 403" in row.last_error and API_TOKEN not in row.last_error
    leads = {r.email for r in roster.reviewers if r.program_lead}
    alerts = [m for m in ctx.db.outbox_list() if "REDCap refused" in m.subject]
    assert leads and {m.recipient for m in alerts} == leads and len(alerts) == len(leads)
    runner.invoke(args=["inbox", "replay", str(row.id)])
    assert len([m for m in ctx.db.outbox_list() if "REDCap refused" in m.subject]) == len(leads)
    assert ctx.store.list_cases() == []


def test_outage_parks_after_the_last_retry_then_replay_succeeds(client, ctx, roster, redcap, run_worker, runner):
    redcap.answers["record"] = (502, {"error": "Bad Gateway"})
    post(client, "det__survey_complete.txt")
    run_worker()
    [row] = ctx.db.list_inbox()
    assert row.status == "parked" and row.attempts == 3
    assert row.last_error == "TransientError: redcap answered HTTP 502 for project 12 record 104"
    redcap.answers["record"] = (200, fixture_json("records__complete.json"))
    result = runner.invoke(args=["inbox", "replay", str(row.id)])
    assert result.exit_code == 0 and "is case PS-" in result.output
    assert len(ctx.store.list_cases()) == 1


def test_record_that_does_not_exist_is_parked_for_a_person(client, ctx, redcap, run_worker):
    redcap.answers["record"] = (200, fixture_json("records__none.json"))
    post(client, "det__survey_complete.txt")
    run_worker()
    [row] = ctx.db.list_inbox()
    assert row.status == "parked" and row.attempts == 1
    assert row.last_error == "PermanentError: redcap has no project 12 record 104 (deleted, or never saved)"
    assert ctx.store.list_cases() == []


def dictionary_as_metadata() -> list[dict]:
    """What REDCap's content=metadata answers once the shipped data dictionary is uploaded
    (the API's keys are the dictionary's columns, in order)."""
    with open(ROOT / "config" / "forms" / "redcap_data_dictionary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:4] == ["Variable / Field Name", "Form Name", "Section Header", "Field Type"]
    return [dict(zip(METADATA_KEYS, r)) for r in rows[1:]]


def test_shipped_data_dictionary_fits_the_mapping(runner, redcap):
    assert fixture_json("metadata__request_instrument.json") == dictionary_as_metadata()
    redcap.answers["metadata"] = (200, dictionary_as_metadata())
    result = runner.invoke(args=["redcap", "check"])
    assert result.exit_code == 0, result.output
    assert "token works" in result.output
    assert {r["content"] for r in redcap.requests} == {"project", "metadata"}


def test_check_names_missing_fields_wrong_choices_and_another_project(runner, redcap):
    metadata = [m for m in dictionary_as_metadata() if m["field_name"] != "urgency"]
    for m in metadata:
        if m["field_name"] == "role":
            m["select_choices_or_calculations"] = "1, Nurse | 2, Physician | 8, Chaplain"
    redcap.answers["metadata"] = (200, metadata)
    redcap.answers["project"] = (200, {**fixture_json("project__info.json"), "project_id": 31})
    result = runner.invoke(args=["redcap", "check"])
    assert result.exit_code != 0
    assert "urgency (for urgency) is not in the project" in result.output
    assert "role: codes 3, 4, 5, 6, 7 are not choices in REDCap" in result.output
    assert "REDCap choices 8 are not mapped" in result.output
    assert "the token belongs to project 31" in result.output


def test_a_project_made_before_the_optional_referrer_questions_still_checks_clean(runner, redcap):
    redcap.answers["metadata"] = (200, [m for m in dictionary_as_metadata()
                                        if not m["field_name"].startswith("referrer_")])
    result = runner.invoke(args=["redcap", "check"])
    assert result.exit_code == 0, result.output


def test_check_with_a_refused_token_says_so(runner, redcap):
    redcap.answers["project"] = (403, fixture_json("error__forbidden.json"))
    result = runner.invoke(args=["redcap", "check"])
    assert result.exit_code != 0 and "refused REDCAP_API_TOKEN" in result.output


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_same_trigger_twice_at_the_same_moment_is_one_row_and_both_are_told_ok(request, overrides, database):
    """Reliability case 4: two deliveries of one notice race each other (two web workers); the
    loser finds the winner's row (its unique key) and answers 200 too."""
    import threading
    from app import create_app
    if database == "postgres":
        overrides = {**overrides, "DATABASE_URL": request.getfixturevalue("pg_url")}
    app = create_app(overrides)
    ctx = app.extensions["peerline"]
    ctx.enqueue = lambda *a, **k: None
    start, answers = threading.Barrier(4), []

    def deliver():
        client = app.test_client()
        start.wait()
        answers.append(post(client, "det__survey_complete.txt").status_code)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [200] * 4
    assert len(ctx.db.list_inbox()) == 1
