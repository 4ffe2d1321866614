"""Qualtrics: a completed response notice becomes exactly one case, fetched with our own token.

The notices and API answers are the stored fixtures in tests/fixtures/qualtrics (see the
README there); the Qualtrics API is mocked at the HTTP layer, so the real requests code runs.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qsl, urlencode

import pytest
import responses
from conftest import load_fixture

from integrations import qualtrics
from workflows import form_mapping, intake

API = "https://iad1.qualtrics.com"
API_TOKEN = "qualtrics-api-token-0f9e8d"
HOOK_TOKEN = "hook-token-4a7b9c2d8e1f6a3b5c7d9e0f"
SURVEY = "SV_eA1b2C3d4E5f6G7"
PLAIN_RID = "R_3kFq8ZxW2mN9pLb"
SHARED_RID = "R_7tYh2LcV9bQx4Ns"


def response_url(rid: str) -> str:
    return f"{API}/API/v3/surveys/{SURVEY}/responses/{rid}"


@pytest.fixture
def overrides(overrides):
    return {**overrides, "QUALTRICS_API_URL": API, "QUALTRICS_API_TOKEN": API_TOKEN,
            "QUALTRICS_WEBHOOK_TOKEN": HOOK_TOKEN, "PUBLIC_BASE_URL": "https://peerline.example.org",
            "RETRY_MAX_ATTEMPTS": "3"}


def post(client, name: str, token: str | None = HOOK_TOKEN, body: bytes | None = None):
    data, content_type = load_fixture("qualtrics", name)
    url = "/webhooks/qualtrics" + (f"?token={token}" if token is not None else "")
    return client.post(url, data=data if body is None else body, content_type=content_type)


def answer_with(mocked, rid: str, fixture: str, status: int = 200):
    mocked.get(response_url(rid), json=json.loads(load_fixture("qualtrics", fixture)[0]), status=status)


def api_calls(mocked) -> list:
    return [c for c in mocked.calls if c.request.url.startswith(API)]


def test_completed_response_becomes_one_case_with_mapped_answers(client, ctx, roster, mocked, run_worker):
    answer_with(mocked, PLAIN_RID, "response__complete.json")
    answer = post(client, "completed_response__plain.txt")
    assert answer.status_code == 200 and answer.get_json() == {"status": "received"}
    [row] = ctx.db.list_inbox()
    assert row.source == "qualtrics" and row.source_key == f"qualtrics:{PLAIN_RID}"
    assert ctx.db.inbox_row(row.id).payload == {"survey_id": SURVEY, "response_id": PLAIN_RID}
    assert ctx.queued == [row.id]
    assert api_calls(mocked) == []          # nothing is fetched on the request path

    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "New" and case.problems == ""
    assert case.source == "qualtrics" and case.source_response_id == f"qualtrics:{PLAIN_RID}"
    assert (case.for_whom, case.requester_name, case.requester_phone, case.requester_email) == \
        ("Self", "Zebulon", "+15550100123", "zeb@example.org")
    assert (case.preferred_contact, case.institution, case.department, case.role, case.specialty) == \
        ("Text message", "NCH", "Surgery", "Nurse", "Perioperative")
    assert (case.role_preference, case.department_preference, case.outside_my_institution) == \
        ("Same", "Different", True)
    assert (case.urgency, case.flyer) == ("Routine", "ICU-3")
    [call] = api_calls(mocked)
    assert call.request.headers["X-API-TOKEN"] == API_TOKEN
    told = {m.recipient for m in ctx.db.outbox_list()}
    assert {r.email for r in roster.reviewers if r.institution == "NCH" or r.program_lead} <= told
    assert ctx.db.list_inbox()[0].status == "done"


def test_shared_key_notice_with_msg_is_accepted_by_the_token(client, ctx, roster, mocked, run_worker):
    answer_with(mocked, SHARED_RID, "response__complete.json")
    assert post(client, "completed_response__shared_key.txt").status_code == 200
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.source_response_id == f"qualtrics:{SHARED_RID}" and case.status == "New"


def test_same_notice_three_times_is_one_case_and_one_fetch(client, ctx, roster, mocked, run_worker):
    answer_with(mocked, PLAIN_RID, "response__complete.json")
    for _ in range(3):
        assert post(client, "completed_response__plain.txt").status_code == 200
    run_worker()
    assert len(ctx.db.list_inbox()) == 1 and len(ctx.queued) == 1
    assert len(ctx.store.list_cases()) == 1
    assert len(api_calls(mocked)) == 1


def test_partial_response_is_answered_and_ignored(client, ctx):
    answer = post(client, "partial_response__plain.txt")
    assert answer.status_code == 200 and answer.get_json() == {"status": "ignored"}
    assert ctx.db.list_inbox() == []


@pytest.mark.parametrize("token", [None, "", "wrong", HOOK_TOKEN[:-1], HOOK_TOKEN + "x"])
def test_wrong_or_missing_token_is_403_and_nothing_stored(client, ctx, token):
    assert post(client, "completed_response__plain.txt", token=token).status_code == 403
    assert ctx.db.list_inbox() == []


def test_unknown_survey_is_403_and_nothing_stored(client, ctx):
    answer = post(client, "completed_response__unknown_survey.txt")
    assert answer.status_code == 403 and answer.get_json() == {"error": "unknown survey"}
    assert ctx.db.list_inbox() == []


def _without(name: str, field: str) -> bytes:
    pairs = parse_qsl(load_fixture("qualtrics", name)[0].decode(), keep_blank_values=True)
    return urlencode([(k, v) for k, v in pairs if k != field]).encode()


@pytest.mark.parametrize("fixture,body,field", [
    ("completed_response__missing_response_id.txt", None, "ResponseID"),
    ("completed_response__bad_response_id.txt", None, "ResponseID"),
    ("completed_response__msg_not_json.txt", None, "MSG"),
    ("completed_response__plain.txt", _without("completed_response__plain.txt", "Topic"), "Topic"),
])
def test_malformed_notice_is_400_naming_the_field(client, ctx, fixture, body, field):
    answer = post(client, fixture, body=body)
    assert answer.status_code == 400
    assert answer.get_json()["field"] == field and answer.get_json()["error"].startswith(field + ":")
    assert ctx.db.list_inbox() == []


def _with_msg(msg: str) -> bytes:
    pairs = parse_qsl(load_fixture("qualtrics", "completed_response__shared_key.txt")[0].decode(),
                      keep_blank_values=True)
    return urlencode([(k, msg if k == "MSG" else v) for k, v in pairs]).encode()


@pytest.mark.parametrize("msg", ["[" * 60_000, '{"a":' * 5_000 + "1" + "}" * 5_000])
def test_msg_nested_at_any_depth_is_400_naming_msg(client, ctx, msg):
    answer = post(client, "completed_response__shared_key.txt", body=_with_msg(msg))
    assert answer.status_code == 400 and answer.get_json()["field"] == "MSG"
    assert ctx.db.list_inbox() == []


def test_database_out_of_reach_is_503_with_retry_after_and_says_nothing_sent(client, ctx, monkeypatch, caplog):
    import sqlalchemy as sa

    def unreachable(**kwargs):
        raise sa.exc.OperationalError("INSERT INTO inbox ...", {"payload": PLAIN_RID}, ConnectionError("refused"))
    monkeypatch.setattr(ctx.db, "record_submission", unreachable)
    answer = post(client, "completed_response__plain.txt")
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert "error" in answer.get_json() and PLAIN_RID not in answer.get_data(as_text=True)
    assert "INSERT" not in caplog.text and ctx.queued == []


def test_body_over_the_limit_without_content_length_is_413(client, ctx):
    import io
    body = b"MSG=" + b"a" * 300_000
    answer = client.post(f"/webhooks/qualtrics?token={HOOK_TOKEN}", input_stream=io.BytesIO(body),
                         content_type="application/x-www-form-urlencoded",
                         environ_overrides={"wsgi.input_terminated": True})   # chunked, as gunicorn passes it
    assert answer.status_code == 413 and answer.is_json
    assert ctx.db.list_inbox() == []


def test_body_over_the_limit_is_413(client, ctx):
    answer = post(client, "completed_response__plain.txt", body=b"MSG=" + b"a" * 300_000)
    assert answer.status_code == 413
    assert ctx.db.list_inbox() == []


def test_unreadable_choices_and_nasty_text_need_attention_and_are_kept_exactly(
        client, ctx, roster, mocked, run_worker, caplog):
    caplog.set_level(logging.DEBUG)
    answer_with(mocked, PLAIN_RID, "response__unreadable_choices.json")
    post(client, "completed_response__plain.txt")
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "Needs attention"
    assert "Role Preference: unreadable answer (QID10 = 7)" in case.problems
    assert "Role: unreadable answer (QID8 = 99)" in case.problems
    assert case.requester_name == "O'Brien \"Ed\" }, TRUE()) 🙂"
    assert case.department == "Surgery\\ICU', {x}"
    assert case.role == "" and case.role_preference == "Any"
    for text in ("O'Brien", "Surgery", "Zebulon", "555 010"):
        assert text not in case.problems and text not in caplog.text
        assert all(text not in m.body for m in ctx.db.outbox_list())


def test_response_not_yet_visible_is_retried_then_becomes_one_case(client, ctx, roster, mocked, run_worker):
    answer_with(mocked, PLAIN_RID, "response__not_found.json", status=404)
    answer_with(mocked, PLAIN_RID, "response__complete.json")
    post(client, "completed_response__plain.txt")
    [row] = ctx.db.list_inbox()
    assert intake.process_submission(ctx, row.id) is None
    row = ctx.db.inbox_row(row.id)
    assert row.status == "retry"
    assert row.last_error == f"TransientError: qualtrics response not yet visible: {PLAIN_RID}"
    run_worker()
    assert len(ctx.store.list_cases()) == 1
    assert ctx.db.inbox_row(row.id).status == "done"
    assert len(api_calls(mocked)) == 2


@pytest.mark.parametrize("status", [429, 500, 503])
def test_outage_parks_after_the_last_retry_then_replay_succeeds(client, ctx, roster, mocked, run_worker,
                                                                 runner, status):
    answer_with(mocked, PLAIN_RID, "response__service_unavailable.json", status=status)
    post(client, "completed_response__plain.txt")
    run_worker()
    [row] = ctx.db.list_inbox()
    assert row.status == "parked" and row.attempts == 3
    assert row.last_error == f"TransientError: qualtrics answered HTTP {status} for {PLAIN_RID}"
    assert ctx.store.list_cases() == [] and len(api_calls(mocked)) == 3
    listed = runner.invoke(args=["inbox", "list"]).output
    assert "parked" in listed and PLAIN_RID in listed

    mocked.replace(responses.GET, response_url(PLAIN_RID),
                   json=json.loads(load_fixture("qualtrics", "response__complete.json")[0]))
    result = runner.invoke(args=["inbox", "replay", str(row.id)])
    assert result.exit_code == 0 and "is case PS-" in result.output
    [case] = ctx.store.list_cases()
    assert case.status == "New" and ctx.db.inbox_row(row.id).status == "done"


def test_refused_token_parks_at_once_and_emails_the_leads_once(client, ctx, roster, mocked, run_worker, runner):
    answer_with(mocked, PLAIN_RID, "response__unauthorized.json", status=401)
    post(client, "completed_response__plain.txt")
    run_worker()
    [row] = ctx.db.list_inbox()
    assert row.status == "parked" and row.attempts == 1 and len(api_calls(mocked)) == 1
    assert "HTTP 401" in row.last_error and API_TOKEN not in row.last_error
    leads = {r.email for r in roster.reviewers if r.program_lead}
    alerts = [m for m in ctx.db.outbox_list() if "Qualtrics refused" in m.subject]
    assert leads and {m.recipient for m in alerts} == leads and len(alerts) == len(leads)
    assert all(f"submission {row.id}" in m.body and m.channel == "email" for m in alerts)
    assert not [m for m in ctx.db.outbox_list() if m.channel == "sms"]

    # Replaying while the token is still wrong parks it again without a second alert, and says so.
    replayed = runner.invoke(args=["inbox", "replay", str(row.id)])
    assert replayed.exit_code == 1 and f"Submission {row.id} did not make a case; it is parked" in replayed.output
    assert ctx.db.inbox_row(row.id).status == "parked"
    assert len([m for m in ctx.db.outbox_list() if "Qualtrics refused" in m.subject]) == len(leads)
    assert ctx.store.list_cases() == []

    # Another submission refused for the same reason is parked too, and named in its own alert.
    answer_with(mocked, SHARED_RID, "response__unauthorized.json", status=401)
    post(client, "completed_response__shared_key.txt")
    run_worker()
    alerts = [m for m in ctx.db.outbox_list() if "Qualtrics refused" in m.subject]
    assert len(alerts) == 2 * len(leads) and all(r.status == "parked" for r in ctx.db.list_inbox())


def test_route_without_a_token_setting_is_404(tmp_path):
    from app import create_app
    from integrations import database
    app = create_app({"DATA_DIR": str(tmp_path / "var"), "SECRET_KEY": "t", "RATELIMIT_ENABLED": "false"})
    try:
        body, content_type = load_fixture("qualtrics", "completed_response__plain.txt")
        answer = app.test_client().post("/webhooks/qualtrics?token=", data=body, content_type=content_type)
        assert answer.status_code == 404
        assert app.extensions["peerline"].db.list_inbox() == []
    finally:
        database.dispose_engines()


def test_subscribe_registers_our_url_and_token_and_prints_no_secret(runner, mocked):
    mocked.post(f"{API}/API/v3/eventsubscriptions/",
                json=json.loads(load_fixture("qualtrics", "eventsubscription__created.json")[0]))
    result = runner.invoke(args=["qualtrics", "subscribe", "--survey", SURVEY])
    assert result.exit_code == 0, result.output
    [call] = api_calls(mocked)
    assert call.request.headers["X-API-TOKEN"] == API_TOKEN
    assert json.loads(call.request.body) == {
        "topics": f"surveyengine.completedResponse.{SURVEY}",
        "publicationUrl": f"https://peerline.example.org/webhooks/qualtrics?token={HOOK_TOKEN}",
        "encrypt": False}
    assert "SUB_9XyZ2aB3cD4eF5g" in result.output and HOOK_TOKEN not in result.output


def test_subscribe_refuses_a_survey_whose_notices_would_be_refused(runner, mocked):
    result = runner.invoke(args=["qualtrics", "subscribe", "--survey", "SV_notInTheMapping1"])
    assert result.exit_code == 1 and "SV_notInTheMapping1 is not in config/forms/qualtrics.toml" in result.output
    assert api_calls(mocked) == []


def test_subscribe_with_a_refused_token_says_what_to_check(runner, mocked):
    mocked.post(f"{API}/API/v3/eventsubscriptions/",
                json=json.loads(load_fixture("qualtrics", "response__unauthorized.json")[0]), status=401)
    result = runner.invoke(args=["qualtrics", "subscribe", "--survey", SURVEY])
    assert result.exit_code != 0
    assert "HTTP 401" in result.output and "brand administrator" in result.output


def test_list_masks_tokens_and_delete_removes(runner, mocked):
    mocked.get(f"{API}/API/v3/eventsubscriptions/",
               json=json.loads(load_fixture("qualtrics", "eventsubscriptions__list.json")[0]))
    mocked.delete(f"{API}/API/v3/eventsubscriptions/SUB_9XyZ2aB3cD4eF5g", json={"meta": {"httpStatus": "200 - OK"}})
    listed = runner.invoke(args=["qualtrics", "list"])
    assert listed.exit_code == 0 and "SUB_9XyZ2aB3cD4eF5g" in listed.output
    assert "s3cr3t" not in listed.output and "token=****" in listed.output
    deleted = runner.invoke(args=["qualtrics", "delete", "SUB_9XyZ2aB3cD4eF5g"])
    assert deleted.exit_code == 0 and api_calls(mocked)[-1].request.method == "DELETE"


def test_a_mapping_that_does_not_fit_the_program_stops_the_start(tmp_path, monkeypatch, ctx):
    broken = tmp_path / "qualtrics.toml"
    broken.write_text('[survey]\nids = ["SV_x"]\n[answers.role]\nquestion = "QID8"\nchoices = { 1 = "Surgeon" }\n'
                      '[answers.favourite_colour]\nquestion = "QID99"\n')
    monkeypatch.setattr(qualtrics, "FORM_FILE", broken)
    with pytest.raises(form_mapping.FormConfigError) as err:
        qualtrics.load_form(ctx.program)
    assert "'Surgeon' is not one of Nurse" in str(err.value) and "favourite_colour" in str(err.value)


def test_a_colleague_referral_keeps_who_referred_them(client, ctx, roster, mocked, run_worker):
    answer_with(mocked, PLAIN_RID, "response__colleague_with_referrer.json")
    post(client, "completed_response__plain.txt")
    run_worker()
    [case] = ctx.store.list_cases()
    assert (case.for_whom, case.requester_name, case.requester_email) == ("Colleague", "Yolanda", "yol@example.org")
    assert (case.referrer_name, case.referrer_phone, case.referrer_email) == \
        ("Xavier", "+15550100888", "xav@example.org")
    for message in ctx.db.outbox_list():
        assert "Xavier" not in message.body and "0888" not in message.body and "xav@" not in message.body


def test_a_response_without_any_contact_is_flagged_not_promised(client, ctx, roster, mocked, run_worker):
    answer_with(mocked, PLAIN_RID, "response__no_contact.json")
    post(client, "completed_response__plain.txt")
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "Needs attention"
    assert "no way to reach the person" in case.problems
    assert {m.recipient for m in ctx.db.outbox_list()} <= \
        {r.phone for r in roster.reviewers} | {r.email for r in roster.reviewers}
