"""After the first contact (issue 11, part B): the supporter's check-in, a hard answer that
tells the program lead and pauses the supporter, the monthly cap, and the one-time surveys
whose answers are stored without the case. The clock is moved, the periodic job run as the
worker would (`followup_clock`), answers sent as real signed SMS through `flask sms simulate`."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.test_offers import (AVERY, accepted, approve, clock, events, new_case, sent, sms,  # noqa: F401
                               supporter, worker)
from workflows import matching, notify, offers, tasks

LEAD = "toni.marchetti@example.org"
REQUESTER = "+15550100123"
SURVEY = re.compile(r"http://localhost:5000/survey/\S+")


def followup(worker):
    worker.followup_clock.call_local()


def contacted(client, ctx, run_worker, runner, clock, **changes):
    case, _ = accepted(client, ctx, run_worker, runner, **changes)
    clock.advance(timedelta(hours=2))
    assert sms(runner, AVERY, f"DONE {case.ref}") == f"Thank you: contact recorded for ref {case.ref}."
    return ctx.store.find_case(case_id=case.case_id)


def lead_told(ctx):
    return [m for m in sent(ctx, to=LEAD) if m.subject.startswith("Supporter check-in")]


def checkin_sms(ctx, case, to=AVERY):
    return [m for m in sent(ctx, to=to, case=case) if "How are you after it?" in m.body]


def test_the_second_half_with_the_clock_moved_forward(client, ctx, roster, run_worker, runner, clock, worker):
    """Contact made, a check-in answered 5 (lead told, supporter paused, not offered the next
    case), both surveys answered once (a second answer refused), answers stored without the case,
    a referral and its /r/ page, and the automatic close."""
    case = contacted(client, ctx, run_worker, runner, clock)
    contact = case.contact_made_at

    # The check-in: not before checkin_after_hours (24 h), then once however often the job runs.
    clock.pin(contact + timedelta(hours=23, minutes=59))
    followup(worker)
    assert checkin_sms(ctx, case) == []
    clock.pin(contact + timedelta(hours=30))          # a late run sends what came due
    followup(worker)
    followup(worker)
    [asked] = checkin_sms(ctx, case)
    assert asked.body == (f"Clinician Peer Support Network: thank you for ref {case.ref}. How are you after "
                             f"it? Reply CHECKIN {case.ref} and a number: 1 (fine) to 5 (struggling).")
    assert events(ctx, case).count("Supporter check-in sent by SMS") == 1

    # A bare 5: the one open check-in. The lead is told (reference and name only), Avery paused.
    assert sms(runner, AVERY, "5").startswith(f"Thank you for telling us (ref {case.ref}). A program lead will")
    paused_until = clock.now() + timedelta(days=14)
    avery = supporter(ctx, "Avery Chen")
    assert avery.paused_until == paused_until
    [told] = lead_told(ctx)
    assert told.subject == f"Supporter check-in: Avery Chen may need support (ref {case.ref})"
    assert notify.show_time(ctx, paused_until) in told.body
    assert "Zebulon" not in told.body + told.subject and "struggling" not in told.body
    assert sms(runner, AVERY, f"CHECKIN {case.ref} 2") == \
        f"Thank you: your check-in for ref {case.ref} is already recorded."
    assert len(lead_told(ctx)) == 1
    assert events(ctx, case)[-2:] == ["Supporter check-in answered",
                                      "Program leads told after the supporter's check-in; supporter paused until "
                                      f"{notify.show_time(ctx, paused_until)}"]
    [row] = ctx.db.checkins_list()
    assert (row["supporter_id"], row["case_id"], row["score"], row["answered_at"]) == \
        (avery.record_id, case.case_id, 5, clock.now())

    # Avery would be first for this request; paused, the next case goes to someone else.
    following = new_case(client, ctx, run_worker)
    approve(runner, following)
    assert ctx.store.find_case(case_id=following.case_id).assigned_supporter not in ("", avery.record_id)
    assert sent(ctx, to=AVERY, case=following) == []

    # The surveys: survey_after_days (7) after contact, once each, to the requester and the supporter.
    clock.pin(contact + timedelta(days=7) - timedelta(minutes=1))
    followup(worker)
    assert not [m for m in sent(ctx, case=case) if SURVEY.search(m.body)]
    clock.pin(contact + timedelta(days=7, hours=1))
    followup(worker)
    followup(worker)
    [to_requester] = [m for m in sent(ctx, to=REQUESTER, case=case) if SURVEY.search(m.body)]
    [to_supporter] = [m for m in sent(ctx, to=AVERY, case=case) if SURVEY.search(m.body)]
    assert ctx.store.find_case(case_id=case.case_id).survey_sent_at == clock.now()
    assert {"Survey link sent to the requester by SMS", "Survey link sent to the supporter by SMS"} <= \
        set(events(ctx, case))
    links = [SURVEY.search(m.body).group(0).replace("http://localhost:5000", "")
             for m in (to_requester, to_supporter)]
    assert links[0] != links[1] and case.case_id not in links[0] + links[1]

    page = client.get(links[0])
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "988" in html and html.index("988") < html.index("<form")
    assert "Was the peer support helpful?" in html and "Would you recommend the program" in html
    assert "Did you feel prepared" not in html and "Zebulon" not in html and "<script" not in html
    assert "Did you feel prepared" in client.get(links[1]).get_data(as_text=True)

    done = client.post(links[0], data={"helpful": "Yes", "timely": "Somewhat", "recommend": "Yes"})
    assert done.status_code == 200 and "Thank you for your answers." in done.get_data(as_text=True)
    again = client.post(links[0], data={"helpful": "No", "timely": "No", "recommend": "No"})
    assert again.status_code == 200 and "Already answered, thank you." in again.get_data(as_text=True)
    assert "Already answered, thank you." in client.get(links[0]).get_data(as_text=True)
    assert client.post(links[1], data={"helpful": "Somewhat", "prepared": "No", "timely": "not a choice"}
                       ).status_code == 200
    assert client.get("/survey/not-a-token").status_code == 410

    # Stored without the case: who answered, institution, role, month, question, answer.
    answers = ctx.db.survey_answers_list()
    month = clock.now().strftime("%Y-%m")
    assert sorted((a["respondent"], a["institution"], a["role"], a["month"], a["question_id"], a["answer"])
                  for a in answers) == sorted([
        ("requester", "NCH", "Nurse", month, "helpful", "Yes"),
        ("requester", "NCH", "Nurse", month, "timely", "Somewhat"),
        ("requester", "NCH", "Nurse", month, "recommend", "Yes"),
        ("supporter", "NCH", avery.role, month, "helpful", "Somewhat"),
        ("supporter", "NCH", avery.role, month, "prepared", "No"),
    ])
    from integrations import database
    for table in (database.survey_answers, database.survey_invitations):
        assert not {"case_id", "case", "supporter_id"} & set(table.c.keys())

    # A third-tier referral (the supporter's or a coordinator's): Referred, and the requester gets
    # the private /r/ page with 988 first.
    refer = runner.invoke(args=["cases", "refer", case.case_id, "--resource", "Chaplaincy"])
    assert refer.exit_code == 0, refer.output
    assert ctx.store.find_case(case_id=case.case_id).status == "Referred"
    [told] = [m for m in sent(ctx, to=REQUESTER, case=case) if "/r/" in m.body]
    resources = client.get(re.search(r"http://localhost:5000(/r/\S+)", told.body).group(1)).get_data(as_text=True)
    assert resources.index("988") < resources.index("Chaplaincy") and "Zebulon" not in resources

    # And it closes itself [followup] close_after_days (14) after contact, once.
    clock.pin(contact + timedelta(days=14, hours=1))
    for _ in range(2):
        assert runner.invoke(args=["jobs", "run", "auto_close"]).exit_code == 0
    closed = ctx.store.find_case(case_id=case.case_id)
    assert closed.status == "Closed" and closed.closed_at == clock.now()
    assert events(ctx, case).count("Closed automatically, 14 days after contact") == 1


def test_a_mild_answer_is_thanked_and_changes_nothing(client, ctx, roster, run_worker, runner, clock, worker):
    case = contacted(client, ctx, run_worker, runner, clock)
    assert sms(runner, AVERY, f"CHECKIN {case.ref} 2").startswith("We have no open check-in")   # not asked yet
    clock.advance(timedelta(hours=24))
    followup(worker)
    assert sms(runner, AVERY, "CHECKIN") == notify.text(ctx, "sms_reply_checkin_which")
    assert sms(runner, AVERY, f"check in ref {case.ref}: 2") == f"Thank you for telling us (ref {case.ref}). " \
                                                               "Look after yourself."
    assert supporter(ctx, "Avery Chen").paused_until is None and lead_told(ctx) == []
    assert sms(runner, "+1 555 010 9999", "4") == notify.text(ctx, "sms_reply_unknown_number")


def test_the_monthly_cap_counts_accepted_offers_in_our_database(client, ctx, roster, run_worker, runner, clock):
    """A supporter who accepted max_cases_per_month (set to 1 here) cases in the last 30 days
    is not offered another; the suggestions say why."""
    ctx.program = ctx.program.model_copy(update={"wellbeing": ctx.program.wellbeing.model_copy(
        update={"max_cases_per_month": 1})})
    first, _ = accepted(client, ctx, run_worker, runner)
    avery = supporter(ctx, "Avery Chen")
    assert first.assigned_supporter == avery.record_id
    second = new_case(client, ctx, run_worker)
    approve(runner, second)
    assert ctx.store.find_case(case_id=second.case_id).assigned_supporter != avery.record_id
    capped = matching.suggested_supporters(second, [avery], ctx.program, ctx.now(),
                                           recent_cases=offers.recent_case_counts(ctx))
    assert "1 at their limit of new cases for the month" in capped
    clock.advance(timedelta(days=30, minutes=1))     # thirty days on, the cap is free again
    assert offers.recent_case_counts(ctx) == {}
    assert [c.supporter.name for c in matching.rank(second, [avery], ctx.program, ctx.now(),
                                                     recent_cases=offers.recent_case_counts(ctx))] == ["Avery Chen"]


def test_an_external_survey_link_is_sent_as_it_is(client, ctx, roster, run_worker, runner, clock, worker):
    external = "https://example.qualtrics.com/jfe/form/SV_peer"
    ctx.program = ctx.program.model_copy(update={"survey": ctx.program.survey.model_copy(
        update={"external_url": external})})
    case = contacted(client, ctx, run_worker, runner, clock)
    clock.advance(timedelta(days=8))
    followup(worker)
    [to_requester] = [m for m in sent(ctx, to=REQUESTER, case=case) if "anonymous" in m.body]
    assert to_requester.body.endswith(external)
    assert ctx.db.survey_answers_list() == []
    with ctx.db.engine.connect() as conn:
        from integrations import database
        assert conn.execute(sa.select(sa.func.count()).select_from(database.survey_invitations)).scalar() == 0


def test_checkin_and_survey_on_postgresql(overrides, pg_url):
    from app import create_app
    from cli import read_roster_csv
    from config.settings import ROOT
    import peerline_root
    app = create_app({**overrides, "DATABASE_URL": pg_url})
    ctx = app.extensions["peerline"]
    ctx.enqueue = lambda *a, **k: None
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    ctx.clock.pin(ctx.clock.now())
    tasks.use_context(ctx)
    try:
        queue = peerline_root.queue(ctx.settings)
        client, runner = app.test_client(), app.test_cli_runner()
        from tests.conftest import drain
        case = contacted(client, ctx, lambda: drain(ctx), runner, ctx.clock)
        ctx.clock.advance(timedelta(days=8))
        followup(queue)
        followup(queue)
        assert len(checkin_sms(ctx, case)) == 1
        assert sms(runner, AVERY, "4").startswith("Thank you for telling us")
        assert supporter(ctx, "Avery Chen").paused_until is not None
        [link] = [SURVEY.search(m.body).group(0) for m in sent(ctx, to=REQUESTER, case=case)
                  if SURVEY.search(m.body)]
        path = link.replace("http://localhost:5000", "")
        assert "Thank you for your answers." in client.post(path, data={"helpful": "Yes"}).get_data(as_text=True)
        assert "Already answered" in client.post(path, data={"helpful": "No"}).get_data(as_text=True)
        assert [(a["question_id"], a["answer"]) for a in ctx.db.survey_answers_list()] == [("helpful", "Yes")]
    finally:
        tasks.use_context(None)


def test_checkin_on_the_airtable_store(overrides, mocked):
    """The same check-in with the cases and supporters in an Airtable base (the fake): the
    hard answer pauses the supporter there, and the job still sends once."""
    from app import create_app
    from cli import read_roster_csv
    from config.settings import ROOT
    from integrations import database
    from tests.conftest import drain
    from tests.fake_airtable import FakeAirtable
    import peerline_root
    url = "https://airtable.test"
    fake = FakeAirtable(token="patCheckin")
    fake.add_base("appCheckin000001")
    fake.install(mocked, url)
    app = create_app({**overrides, "AIRTABLE_API_KEY": "patCheckin", "AIRTABLE_BASE_ID": "appCheckin000001",
                      "AIRTABLE_API_URL": url})
    ctx = app.extensions["peerline"]
    ctx.enqueue = lambda *a, **k: None
    runner, client = app.test_cli_runner(), app.test_client()
    assert runner.invoke(args=["airtable", "init"]).exit_code == 0
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    ctx.clock.pin(ctx.clock.now())
    tasks.use_context(ctx)
    try:
        queue = peerline_root.queue(ctx.settings)
        case = contacted(client, ctx, lambda: drain(ctx), runner, ctx.clock)
        ctx.clock.advance(timedelta(hours=24))
        followup(queue)
        followup(queue)
        assert len(checkin_sms(ctx, case)) == 1
        assert sms(runner, AVERY, f"CHECKIN {case.ref} 4").startswith("Thank you for telling us")
        avery = supporter(ctx, "Avery Chen")
        # Airtable keeps milliseconds.
        assert abs(avery.paused_until - (ctx.clock.now() + timedelta(days=14))) < timedelta(seconds=1)
        assert len(lead_told(ctx)) == 1
        assert "Supporter check-in answered" in events(ctx, case)
    finally:
        tasks.use_context(None)
        database.dispose_engines()
