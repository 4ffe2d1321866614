"""The review clock: nobody waits unnoticed.

Run by a huey periodic task (`review_clock`, every five minutes; the clock is UTC, times are
shown in program.toml's time zone). Windows come from program.toml:

- A case not yet approved (New, Needs attention) at its Review Due minus
  [review] reminder_before_hours (24 h; Urgent and Crisis: urgent_reminder_before_hours)
  reminds its institution's reviewers (the program leads when it has none), by SMS and email.
- At Review Due it escalates to the program leads, by SMS and email.
- An Assigned case with no Contact Made At, [offers] contact_window_hours (48 h; Urgent and
  Crisis: urgent_contact_window_hours) after the
  supporter accepted, asks the supporter by SMS whether they reached the person.
- [offers] contact_escalate_after_hours (24 h) after that, it tells the case's reviewers.

Each is sent once and written once as an Event, however often or late the task runs: messages
go through the ledger, each step is marked done in the service's own database after its
Event, and one run at a time does the work (a second, overlapping run returns at once). A run
that comes late sends what came due meanwhile, each once.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from workflows import answers, notify, offers, watch
from workflows.errors import each_case
from workflows.model import Case, Event

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.deadlines")

NOT_YET_APPROVED = ("New", "Needs attention")


def run(ctx: Context) -> int:
    """One pass of the clock. Returns how many reminders and escalations went out now. Reads
    no case while nothing can be due (workflows/watch.py)."""
    run_ = watch.clock_start(ctx, "review_clock")
    if run_ is None:
        return 0
    with _only_one_run(ctx) as mine:
        if not mine:
            log.info("review clock already running elsewhere; skipped")
            return 0
        done, cases = 0, []
        for status in NOT_YET_APPROVED:
            found = ctx.store.list_cases(status)
            done += each_case(ctx, found, review_clock, log, "review clock")
            cases += found
        assigned = ctx.store.list_cases("Assigned")
        done += each_case(ctx, assigned, contact_clock, log, "review clock")
        watch.clock_read(ctx, run_, [m for case in cases + assigned for m in moments(ctx, case)])
        return done


def moments(ctx: Context, case: Case) -> list:
    """When the review clock has something left to do for this case (workflows/watch.py)."""
    if case.status in NOT_YET_APPROVED:
        return _review_moments(ctx, case)
    return _contact_moments(ctx, case) if case.status == "Assigned" else []


def _review_moments(ctx: Context, case: Case) -> list:
    if case.review_due is None:
        return []
    return [at for at, step in ((reminder_at(ctx, case), "review_reminder"), (case.review_due, "review_overdue"))
            if not ctx.db.milestone_done(case.case_id, step)]


def _contact_moments(ctx: Context, case: Case) -> list:
    offer = answers.accepted_offer(ctx, case) if case.contact_made_at is None else None
    if offer is None:
        return []
    due = answers.contact_due(ctx, offer.answered_at, case.urgency)
    escalate = due + timedelta(hours=ctx.program.offers.contact_escalate_after_hours)
    return [at for at, step in ((due, "contact_check"), (escalate, "contact_overdue"))
            if not ctx.db.milestone_done(case.case_id, step)]


def reminder_at(ctx: Context, case: Case):
    review = ctx.program.review
    hours = review.urgent_reminder_before_hours if case.urgency in ("Urgent", "Crisis") \
        else review.reminder_before_hours
    return case.review_due - timedelta(hours=hours)


def review_clock(ctx: Context, case: Case) -> int:
    """Remind the reviewers before Review Due; tell the program leads at it."""
    if case.review_due is None:
        return 0
    now, sent = ctx.now(), 0
    if now >= reminder_at(ctx, case):
        own = [r for r in ctx.store.reviewers() if case.institution and r.institution == case.institution]
        leads = [r for r in ctx.store.reviewers() if r.program_lead]
        who = "the institution's reviewers" if own else "the program leads, as the institution has no reviewers"
        sent += offers.tell_reviewers_once(
            ctx, case, "review_reminder", ("review_reminder_sms", "review_reminder_email"),
            reviewers=own or leads, deadline=case.review_due,
            event=f"Review reminder sent to {who} (due {notify.show_time(ctx, case.review_due)})")
    if now >= case.review_due:
        sent += offers.tell_reviewers_once(
            ctx, case, "review_overdue", ("review_overdue_lead_sms", "review_overdue_lead_email"),
            reviewers=[r for r in ctx.store.reviewers() if r.program_lead], deadline=case.review_due,
            event="Review overdue: program leads told")
    return sent


def contact_clock(ctx: Context, case: Case) -> int:
    """Ask the supporter whether they reached the person; later, tell the reviewers."""
    if case.contact_made_at is not None:
        return 0
    offer = answers.accepted_offer(ctx, case)
    if offer is None:
        return 0        # assigned by hand in Airtable, not through an offer: no clock to keep
    now, sent = ctx.now(), 0
    due = answers.contact_due(ctx, offer.answered_at, case.urgency)
    if now >= due and not ctx.db.milestone_done(case.case_id, "contact_check"):
        supporter = next((s for s in ctx.store.supporters() if s.record_id == offer.supporter_id), None)
        if supporter is not None:
            notify.send(ctx, case_id=case.case_id, kind="contact_check", template="contact_check_supporter_sms",
                        recipient=notify.Recipient(key=f"supporter:{supporter.record_id}", role="Supporter",
                                                   phone=supporter.phone),
                        values={"ref": case.ref, "link": answers.supporter_link(ctx, offer)},
                        crisis=case.urgency == "Crisis")
        ctx.store.add_events([Event(case.case_id, "Supporter asked by SMS whether contact was made" if supporter
                                    else "Supporter no longer in the roster: contact check not sent", at=now)])
        ctx.db.milestone_mark(case.case_id, "contact_check", now)
        sent += 1
    escalate = due + timedelta(hours=ctx.program.offers.contact_escalate_after_hours)
    if now >= escalate:
        sent += offers.tell_reviewers_once(
            ctx, case, "contact_overdue", ("contact_overdue_reviewer_sms", "contact_overdue_reviewer_email"),
            deadline=due, event="No contact recorded: reviewers told")
    return sent


@contextmanager
def _only_one_run(ctx: Context):
    """Yields True when this run holds the clock's lock, False when another run does."""
    lock = ctx.db.lock("review_clock", ttl_seconds=600, wait_seconds=0)
    try:
        lock.__enter__()
    except TimeoutError:
        yield False
        return
    try:
        yield True
    finally:
        lock.__exit__(None, None, None)
