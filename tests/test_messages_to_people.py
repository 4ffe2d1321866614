"""What people are told: a crisis sends the crisis messages only, promises follow the
request's urgency, a colleague is never thanked for a request they did not make, and the
crisis resources read cleanly. Runs on the embedded defaults (outbox) with the service clock pinned to today,
so it does not depend on the date."""
from __future__ import annotations

import re
from datetime import timedelta

from tests.test_intake import get_form
from tests.test_offers import AVERY, approve, clock, new_case, sent, sms  # noqa: F401 (fixture)
from workflows import answers, notify


def test_a_crisis_case_sends_reviewers_the_crisis_messages_only(client, ctx, roster, run_worker):
    case = new_case(client, ctx, run_worker, urgency="Crisis")
    bodies = [m.subject + " " + m.body for m in sent(ctx, case=case)]
    assert any("URGENT" in b for b in bodies)
    assert not [b for b in bodies if "review by" in b.lower() or "waiting for review" in b]
    assert "Reviewers notified" in [e.event for e in ctx.store.list_events(case.case_id)]


def test_a_routine_case_still_asks_reviewers_to_review_by_the_deadline(client, ctx, roster, run_worker):
    case = new_case(client, ctx, run_worker)
    assert any("Please review by" in m.body for m in sent(ctx, case=case, channel="sms"))


def test_an_urgent_requester_is_promised_contact_within_the_urgent_window(client, ctx, roster, run_worker,
                                                                          runner, clock):
    case = new_case(client, ctx, run_worker, urgency="Urgent")
    approve(runner, case)
    sms(runner, AVERY, f"YES {case.ref}")
    hours = ctx.program.offers.urgent_contact_window_hours
    assert hours < 24     # "today, if possible"
    [told] = sent(ctx, to="+15550100123")
    assert notify.show_time(ctx, clock.now() + timedelta(hours=hours)) in told.body
    assert notify.show_time(ctx, clock.now() + timedelta(hours=48)) not in told.body
    assert answers.contact_due(ctx, clock.now(), "Urgent") == clock.now() + timedelta(hours=hours)
    assert answers.contact_due(ctx, clock.now(), "Routine") == clock.now() + timedelta(hours=48)


def test_a_colleague_is_told_a_colleague_asked_not_thanked_for_asking(client, ctx, roster, run_worker, runner,
                                                                      clock):
    case = new_case(client, ctx, run_worker, for_whom="Colleague", preferred_contact="Email",
                    requester_email="colleague@example.org")
    assert sent(ctx, to="colleague@example.org") == []          # nothing before they agreed
    approve(runner, case, "--colleague-agreed")
    sms(runner, AVERY, f"YES {case.ref}")
    [told] = sent(ctx, to="colleague@example.org")
    assert "a colleague asked us to reach out to you" in told.body.lower()
    assert "thank you for your request" not in told.body.lower()
    assert "your request" not in (told.subject + told.body).lower()
    for who in ("Xavier", "xav@example.org"):    # the referrer stays out of it
        assert who not in told.body and all(who not in m.body for m in ctx.db.outbox_list())


def test_a_colleague_referral_page_does_not_promise_contact_the_way_the_referrer_asked(client):
    from tests.test_intake import submit
    answer = submit(client, for_whom="Colleague")
    thanks = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "reach out the way you asked" not in thanks


def test_each_crisis_resource_states_its_hours_once(client, ctx):
    html, _ = get_form(client)
    aside = html[html.index('<aside class="crisis"'):html.index("</aside>")]
    for resource in ctx.program.crisis.resources:
        hours = resource.hours
        line = re.search(rf"<li>{re.escape(resource.name)}:.*?</li>", aside).group(0)
        assert line.count(hours) == 1, line
    text = notify.crisis_resources(ctx.program)
    assert text.count("24/7") == 1 and "Employee Assistance Program: +1 800 555 0142 (24/7)." in text
