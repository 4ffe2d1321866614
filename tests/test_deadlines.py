"""The review clock: reminders before Review Due, escalation at it, the contact check after an
assignment; each once (an Event and a Messages row), however often or late the task runs."""
from __future__ import annotations

from datetime import timedelta

import pytest

import peerline_root
from tests.test_offers import AVERY, approve, clock, events, new_case, sent, sms
from workflows import deadlines, notify, tasks

NCH_REVIEWERS = {"+15550101127", "robin.asante@example.org", "+15550101128", "alex.moretti@example.org"}
LEADS = {"+15550101133", "toni.marchetti@example.org"}


@pytest.fixture
def review_clock(ctx):
    """The periodic task itself, run in-process on this test's context."""
    tasks.use_context(ctx)
    yield peerline_root.queue(ctx.settings).review_clock.call_local
    tasks.use_context(None)


def told(ctx, case, kind):
    """Who was sent messages of this kind, from the ledger (the Messages table's truth)."""
    return {r.recipient for r in ctx.db.ledger_rows(case.case_id) if r.kind == kind and r.status == "sent"}


def test_reviewers_are_reminded_once_before_review_due_and_leads_told_once_at_it(client, ctx, roster, run_worker,
                                                                              clock, review_clock):
    case = new_case(client, ctx, run_worker)
    clock.pin(case.review_due - timedelta(hours=24, minutes=1))
    review_clock()
    assert told(ctx, case, "review_reminder") == set()
    clock.pin(case.review_due - timedelta(hours=24))
    review_clock()
    review_clock()
    assert told(ctx, case, "review_reminder") == NCH_REVIEWERS            # the institution's, not the leads
    [reminder] = [m for m in sent(ctx, to="+15550101127", case=case) if "still needs review" in m.body]
    assert reminder.body == (f"Clinician Peer Support Network: ref {case.ref} still needs review, due by "
                                f"{notify.show_time(ctx, case.review_due)}. {notify.coordinator_link(ctx, case.case_id)}")
    assert told(ctx, case, "review_overdue") == set()
    clock.pin(case.review_due)
    review_clock()
    review_clock()
    assert told(ctx, case, "review_overdue") == LEADS
    assert len([r for r in ctx.db.ledger_rows(case.case_id) if r.kind in ("review_reminder", "review_overdue")]) == 6
    assert len([m for m in ctx.db.outbox_list() if m.message_key.split(":")[1] in
                ("review_reminder", "review_overdue")]) == 6
    assert events(ctx, case)[-2:] == [
        f"Review reminder sent to the institution's reviewers (due {notify.show_time(ctx, case.review_due)})",
        "Review overdue: program leads told"]


def test_urgent_requests_are_reminded_four_hours_before_their_twelve_hour_review(client, ctx, roster, run_worker,
                                                                              clock, review_clock):
    case = new_case(client, ctx, run_worker, urgency="Urgent")
    assert case.review_due - case.submitted_at == timedelta(hours=12)
    clock.pin(case.review_due - timedelta(hours=4, minutes=1))
    review_clock()
    assert told(ctx, case, "review_reminder") == set()
    clock.pin(case.review_due - timedelta(hours=4))
    review_clock()
    assert told(ctx, case, "review_reminder") == NCH_REVIEWERS


def test_a_run_that_comes_late_sends_each_due_message_once(client, ctx, roster, run_worker, clock, review_clock):
    case = new_case(client, ctx, run_worker)
    clock.pin(case.review_due + timedelta(hours=10))          # the worker was down for days
    review_clock()
    review_clock()
    assert told(ctx, case, "review_reminder") == NCH_REVIEWERS and told(ctx, case, "review_overdue") == LEADS
    assert events(ctx, case).count("Review overdue: program leads told") == 1


def test_a_case_without_an_institution_reminds_the_program_leads(client, ctx, roster, run_worker, clock, review_clock):
    case = new_case(client, ctx, run_worker, institution="")
    assert case.status == "Needs attention"
    clock.pin(case.review_due - timedelta(hours=1))
    review_clock()
    assert told(ctx, case, "review_reminder") == LEADS
    assert "Review reminder sent to the program leads, as the institution has no reviewers" in events(ctx, case)[-1]


def test_an_approved_case_is_not_reminded(client, ctx, roster, run_worker, runner, clock, review_clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    clock.pin(case.review_due + timedelta(hours=1))
    review_clock()
    assert told(ctx, case, "review_reminder") == set() and told(ctx, case, "review_overdue") == set()


def test_no_contact_asks_the_supporter_once_then_tells_the_reviewers_once(client, ctx, roster, run_worker, runner,
                                                                       clock, review_clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    sms(runner, AVERY, f"YES {case.ref}")
    accepted_at = clock.now()
    clock.pin(accepted_at + timedelta(hours=47, minutes=59))
    review_clock()
    assert told(ctx, case, "contact_check") == set()
    clock.pin(accepted_at + timedelta(hours=48))
    review_clock()
    review_clock()
    assert told(ctx, case, "contact_check") == {AVERY}
    [check] = [m for m in sent(ctx, to=AVERY) if "have you reached" in m.body]
    assert f"Reply DONE {case.ref}" in check.body and "/s/" in check.body and "Zebulon" not in check.body
    clock.pin(accepted_at + timedelta(hours=71, minutes=59))
    review_clock()
    assert told(ctx, case, "contact_overdue") == set()
    clock.pin(accepted_at + timedelta(hours=72))
    review_clock()
    review_clock()
    assert told(ctx, case, "contact_overdue") == NCH_REVIEWERS | LEADS
    assert events(ctx, case)[-2:] == ["Supporter asked by SMS whether contact was made",
                                      "No contact recorded: reviewers told"]


def test_contact_made_stops_the_contact_clock(client, ctx, roster, run_worker, runner, clock, review_clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    sms(runner, AVERY, f"YES {case.ref}")
    clock.advance(timedelta(hours=5))
    sms(runner, AVERY, f"DONE {case.ref}")
    clock.advance(timedelta(hours=100))
    review_clock()
    assert told(ctx, case, "contact_check") == set() and told(ctx, case, "contact_overdue") == set()


def test_an_overlapping_run_does_nothing(client, ctx, roster, run_worker, clock):
    case = new_case(client, ctx, run_worker)
    clock.pin(case.review_due)
    with ctx.db.lock("review_clock"):
        assert deadlines.run(ctx) == 0
    assert told(ctx, case, "review_reminder") == set()
    assert deadlines.run(ctx) == 2
