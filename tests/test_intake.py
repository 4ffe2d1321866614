"""The spine: the built-in form to a case, reviewers told, nothing lost or doubled."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest

from config.program import Program
from workflows import intake


def get_form(client, path="/request"):
    page = client.get(path)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    submission = re.search(r'name="submission_id" type="hidden" value="([^"]*)"', html).group(1)
    flyer = re.search(r'name="flyer" type="hidden" value="([^"]*)"', html).group(1)
    return html, {"csrf_token": token, "submission_id": submission, "flyer": flyer}


GOOD = {"for_whom": "Self", "requester_name": "Zebulon", "requester_phone": "+1 555 010 0123",
        "requester_email": "", "preferred_contact": "Text message", "institution": "NCH",
        "department": "Surgery", "role": "Nurse", "specialty": "Perioperative",
        "role_preference": "Same", "department_preference": "Different", "urgency": "Routine"}


#: Who refers a colleague: the form asks it of every colleague referral.
REFERRER = {"referrer_name": "Xavier", "referrer_email": "xav@example.org"}


def submit(client, **changes):
    _, hidden = get_form(client, "/request?flyer=ICU-3")
    referrer = REFERRER if changes.get("for_whom") == "Colleague" else {}
    return client.post("/request", data={**hidden, **GOOD, **referrer, **changes})


def test_form_shows_crisis_resources_before_the_form(client):
    html, _ = get_form(client)
    assert "988" in html and "Employee Assistance Program" in html
    assert html.index("988") < html.index("<form")


def test_submission_becomes_one_case_and_reviewers_are_told(client, ctx, roster, run_worker):
    answer = submit(client)
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/request/thanks")
    thanks = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "Zebulon" not in thanks and "0123" not in thanks and "Surgery" not in thanks
    assert len(ctx.queued) == 1
    run_worker()
    [case] = ctx.store.list_cases()
    assert re.fullmatch(r"PS-1\d{4}", case.case_id)
    assert case.status == "New" and case.problems == ""
    assert case.flyer == "ICU-3" and case.institution == "NCH" and case.role_preference == "Same"
    assert case.review_due - case.submitted_at == timedelta(hours=72)
    sent = ctx.db.outbox_list()
    nch_reviewers = {r.phone for r in roster.reviewers if r.institution == "NCH" or r.program_lead}
    assert {m.recipient for m in sent if m.channel == "sms"} == nch_reviewers
    assert len([m for m in sent if m.channel == "email"]) == len(nch_reviewers)
    for m in sent:
        assert case.ref in m.body
        assert "Zebulon" not in m.body and "Surgery" not in m.body and "555 010 0123" not in m.body
    assert [e.event for e in ctx.store.list_events(case.case_id)] == ["Case created", "Reviewers notified"]


def test_same_submission_twice_is_one_case(client, ctx, roster, run_worker):
    _, hidden = get_form(client)
    for _ in range(2):
        assert client.post("/request", data={**hidden, **GOOD}).status_code == 303
    run_worker()
    assert len(ctx.store.list_cases()) == 1
    assert len(ctx.db.list_inbox()) == 1


def test_running_the_task_twice_sends_nothing_twice(client, ctx, roster, run_worker):
    submit(client)
    run_worker()
    before = len(ctx.db.outbox_list())
    [row] = ctx.db.list_inbox()
    ctx.db.reopen_submission(row.id)
    run_worker()
    assert len(ctx.db.outbox_list()) == before
    assert len(ctx.store.list_cases()) == 1
    [case] = ctx.store.list_cases()
    assert len(ctx.store.list_events(case.case_id)) == 2


def test_missing_answers_make_a_case_that_needs_attention(client, ctx, roster, run_worker):
    assert submit(client, institution="", role="").status_code == 303
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "Needs attention"
    assert "Institution: missing" in case.problems and "Role: missing" in case.problems
    # Without an institution only the program leads can be told.
    leads = {r.email for r in ctx.store.reviewers() if r.program_lead}
    assert {m.recipient for m in ctx.db.outbox_list() if m.channel == "email"} == leads


def test_tampered_choices_are_kept_and_named(ctx, roster, run_worker):
    row_id, _ = ctx.db.record_submission(source="web", source_key="web:tampered", payload={"answers": {
        **GOOD, "institution": "{Nope}', TRUE()", "urgency": "whenever", "requester_name": "O'Brien \"Ed\" 🙂"}})
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "Needs attention"
    assert "Institution: not one of the program's institutions" in case.problems
    assert "Urgency: unreadable answer" in case.problems
    assert case.requester_name == "O'Brien \"Ed\" 🙂"
    assert case.urgency == "Routine"


def test_form_errors_are_accessible_and_keep_answers(client, ctx):
    answer = submit(client, requester_phone="", requester_email="not-an-email", preferred_contact="Email")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert 'role="alert"' in html and "Please enter an email address" in html
    assert 'aria-invalid="true"' in html and 'aria-describedby="requester_email-hint requester_email-error"' in html
    assert 'value="Zebulon"' in html
    assert ctx.db.list_inbox() == []


def test_missing_csrf_token_is_refused_and_nothing_stored(client, ctx):
    assert client.post("/request", data=GOOD).status_code == 400
    assert ctx.db.list_inbox() == []


def test_crisis_request_jumps_the_queue(client, ctx):
    calls = []
    ctx.enqueue = lambda inbox_id, **kw: calls.append(kw)
    submit(client, urgency="Crisis")
    assert calls == [{"priority": "crisis", "delay": None}]
    [row] = ctx.db.list_inbox()
    assert ctx.db.inbox_row(row.id).priority == "crisis"     # its retries and sweeps too
    assert "988" in client.get("/request/thanks?urgent=1").get_data(as_text=True)


def test_body_over_the_limit_is_413(client):
    assert client.post("/request", data={"x": "a" * 300_000}).status_code == 413


@pytest.mark.parametrize("overrides_extra", [{"RATELIMIT_ENABLED": "true", "REQUEST_RATE_LIMIT": "2 per minute"}])
def test_rate_limit_per_client(overrides, overrides_extra, tmp_path):
    from app import create_app
    app = create_app({**overrides, **overrides_extra})
    app.extensions["peerline"].enqueue = lambda *a, **k: None
    client = app.test_client()
    codes = [submit(client).status_code for _ in range(3)]
    assert codes == [303, 303, 429]
    page = client.post("/request", data=GOOD)
    assert page.status_code == 429 and "988" in page.get_data(as_text=True)


def test_request_from_answers_never_raises_on_junk():
    program = Program.model_validate({"program": {"name": "P"}, "institutions": {"NCH": "Northgate"},
                                      "roles": {"choices": ["Nurse"]}})
    req, problems = intake.request_from_answers({"urgency": None, "institution": 7, "crisis": "yes"}, program)
    assert req.urgency == "Crisis"
    assert any(p.startswith("Institution") for p in problems)



def test_a_database_error_does_not_quote_the_answers(ctx):
    """Errors are logged with tracebacks; SQL errors must not carry the request's text."""
    import sqlalchemy as sa
    from integrations import database
    with ctx.db.engine.begin() as conn:
        conn.execute(database.inbox.insert().values(
            source="web", source_key="web:dup", received_at=ctx.now(), payload="{}", status="new"))
    with pytest.raises(sa.exc.IntegrityError) as err:
        with ctx.db.engine.begin() as conn:
            conn.execute(database.inbox.insert().values(
                source="web", source_key="web:dup", received_at=ctx.now(),
                payload='{"requester_name": "Zebulon Canary"}', status="new"))
    assert "Zebulon" not in str(err.value)


def test_phone_numbers_are_kept_in_the_form_sms_providers_take(client, ctx, roster, run_worker):
    submit(client, requester_phone="(555) 010-0777")
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.requester_phone == "+15550100777" and case.problems == ""


def test_a_phone_number_that_cannot_be_texted_is_named_as_a_problem(ctx, roster, run_worker):
    ctx.db.record_submission(source="web", source_key="web:short", payload={"answers": {
        **GOOD, "requester_phone": "12345", "requester_email": "z@example.org"}})
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "Needs attention" and "Phone: not a phone number" in case.problems
    assert "12345" not in case.problems


@pytest.mark.parametrize("phone", ["555 010 12", "555 O1O 1234", "555 010 0123 0123"])   # short, letters, long
def test_a_phone_number_that_cannot_be_called_is_asked_again_on_the_form(client, ctx, phone):
    answer = submit(client, requester_phone=phone)
    assert answer.status_code == 400
    assert "Please enter a phone number, for example 555 010 1234." in answer.get_data(as_text=True)
    referred = submit(client, for_whom="Colleague", referrer_name="Xavier", referrer_phone=phone, referrer_email="")
    assert referred.status_code == 400
    assert "Please enter a phone number, for example 555 010 1234." in referred.get_data(as_text=True)
    assert ctx.db.list_inbox() == []


@pytest.mark.parametrize("phone", ["1-555-010-0123", "555.010.0123", "+1 (555) 010-0123"])
def test_the_form_takes_a_phone_number_however_it_is_written(client, ctx, phone):
    assert submit(client, requester_phone=phone).status_code == 303


@pytest.mark.parametrize("field,label", [("requester_phone", "Phone"), ("referrer_phone", "Referrer Phone")])
@pytest.mark.parametrize("phone", ["555 010 12", "555 O1O 1234", "555 010 0123 0123"])   # short, letters, long
def test_an_outside_forms_phone_that_cannot_be_called_is_named_as_a_problem(ctx, roster, run_worker, field,
                                                                               label, phone):
    ctx.db.record_submission(source="web", source_key="web:bad-phone", payload={"answers": {
        **GOOD, "for_whom": "Colleague", "referrer_name": "Xavier", "referrer_phone": "+1 555 010 0888",
        "requester_email": "z@example.org", "preferred_contact": "Email", field: phone}})
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.status == "Needs attention" and f"{label}: not a phone number" in case.problems
    assert phone not in case.problems


def test_a_request_with_no_way_to_reach_the_person_is_asked_again_on_the_page(client, ctx):
    answer = submit(client, requester_phone="", requester_email="", preferred_contact="Email")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400 and ctx.db.list_inbox() == []
    assert "Please give a phone number or an email address, so someone can reach you." in html
    # The error and the hint are read with the phone field, and the summary links to it.
    assert 'id="requester_phone-error"' in html and 'href="#requester_phone"' in html
    phone_input = re.search(r'<input[^>]*id="requester_phone"[^>]*>', html).group(0)
    assert 'aria-describedby="requester_phone-hint requester_phone-error"' in phone_input
    assert 'aria-invalid="true"' in phone_input
    assert "We need a way to reach the person" in html


def test_the_contact_chosen_must_be_given(client, ctx):
    by_email = submit(client, requester_phone="+1 555 010 0123", requester_email="", preferred_contact="Email")
    assert by_email.status_code == 400
    email_input = re.search(r'<input[^>]*id="requester_email"[^>]*>', by_email.get_data(as_text=True)).group(0)
    assert 'aria-describedby="requester_email-hint requester_email-error"' in email_input
    by_text = submit(client, requester_phone="", requester_email="z@example.org", preferred_contact="Text message")
    assert by_text.status_code == 400 and "Please give a phone number for a call or text" in by_text.get_data(
        as_text=True)
    assert ctx.db.list_inbox() == []


def test_phone_and_email_are_not_labelled_optional(client):
    html, _ = get_form(client)
    for field in ("requester_phone", "requester_email"):
        label = re.search(rf'<label class="field" for="{field}">.*?</label>', html, re.S).group(0)
        assert "(optional)" not in label


def test_a_colleague_referral_asks_who_is_referring(client, ctx):
    answer = submit(client, for_whom="Colleague", referrer_name="", referrer_email="")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400 and ctx.db.list_inbox() == []
    assert "Please give your own name" in html and "Please give your own phone number or email address." in html
    assert 'aria-describedby="referrer_name-error"' in html


def test_a_colleague_referral_keeps_the_referrer_on_the_case(client, ctx, roster, run_worker):
    answer = submit(client, for_whom="Colleague", referrer_name="Xavier", referrer_email="xav@example.org")
    assert answer.status_code == 303
    thanks = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "reach out the way you asked" not in thanks and "agree" in thanks
    run_worker()
    [case] = ctx.store.list_cases()
    assert (case.referrer_name, case.referrer_phone, case.referrer_email) == ("Xavier", "", "xav@example.org")
    for message in ctx.db.outbox_list():
        assert "Xavier" not in message.body and "xav@" not in message.body


def test_referrer_answers_are_dropped_when_the_request_is_for_oneself(client, ctx, roster, run_worker):
    submit(client, referrer_name="Xavier", referrer_phone="+1 555 010 0888")
    run_worker()
    [case] = ctx.store.list_cases()
    assert (case.referrer_name, case.referrer_phone) == ("", "")
