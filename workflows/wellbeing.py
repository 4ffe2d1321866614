"""The supporter's check-in after a case, and what a hard answer does (docs/architecture.md section 8).

- `[followup] checkin_after_hours` after Contact Made At, the case's supporter gets one SMS:
  how are you after ref 4821? They answer `CHECKIN 4821 2` (1 fine to 5 struggling), or a bare
  digit when only one check-in of theirs is open (workflows/sms_commands.py).
- A 4 or 5 tells every program lead by email (the reference and the supporter's name only)
  and pauses the supporter for `[wellbeing] cooldown_days` (Paused Until), so matching does not
  offer them the next case. `[wellbeing] max_cases_per_month` caps new cases in matching
  (workflows/offers.py `recent_case_counts`).
- Check-ins live in the service's own database (`checkins`: supporter id, case id until purge,
  asked at, answered at, score, month) for the dashboard; the case gets Events only.

`run` is called by the `followup_clock` job (workflows/tasks.py): each check-in is sent once and
written once as an Event however often or late the job runs (the ledger, and the milestone
`checkin` marked after its Event); a late run sends what came due meanwhile.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from workflows import answers, notify, watch
from workflows.errors import each_case
from workflows.model import Case, Event, Supporter

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.wellbeing")

#: Scores from 1 (fine) to 5 (struggling); these tell a lead and pause the supporter.
SCORES = range(1, 6)
HARD = (4, 5)


def after_contact(ctx: Context) -> list[Case]:
    """Cases whose contact is made and that still hold their details (not purged)."""
    return [c for c in ctx.store.list_cases() if c.contact_made_at is not None and c.purged_at is None]


def run(ctx: Context) -> int:
    """Send every check-in that is due. Returns how many were sent now. Reads no case while
    none can be due (workflows/watch.py)."""
    run_ = watch.clock_start(ctx, "checkin")
    if run_ is None:
        return 0
    cases = after_contact(ctx)
    sent = each_case(ctx, cases, checkin_due, log, "check-in")
    watch.clock_read(ctx, run_, [m for case in cases for m in moments(ctx, case)])
    return sent


def moments(ctx: Context, case: Case) -> list:
    """When the check-in of this case is due, unless it went (workflows/watch.py)."""
    if case.contact_made_at is None or case.purged_at is not None or ctx.db.milestone_done(case.case_id, "checkin"):
        return []
    return [case.contact_made_at + timedelta(hours=ctx.program.followup.checkin_after_hours)]


def checkin_due(ctx: Context, case: Case) -> int:
    due = case.contact_made_at + timedelta(hours=ctx.program.followup.checkin_after_hours)
    if ctx.now() < due or ctx.db.milestone_done(case.case_id, "checkin"):
        return 0
    supporter = _supporter(ctx, case.assigned_supporter)
    if supporter is None:
        ctx.store.add_events([Event(case.case_id, "Supporter no longer in the roster: check-in not sent",
                                    at=ctx.now())])
    else:
        ctx.db.checkin_create(supporter_id=supporter.record_id, case_id=case.case_id, asked_at=ctx.now())
        notify.send(ctx, case_id=case.case_id, kind="checkin", template="checkin_supporter_sms",
                    recipient=notify.Recipient(key=f"supporter:{supporter.record_id}", role="Supporter",
                                               phone=supporter.phone),
                    values={"ref": case.ref})
        ctx.store.add_events([Event(case.case_id, "Supporter check-in sent by SMS", at=ctx.now())])
    ctx.db.milestone_mark(case.case_id, "checkin", ctx.now())
    return 1


def answer(ctx: Context, phone: str, ref: str | None, score: int | None) -> str:
    """CHECKIN <ref> <score>, or a bare digit (ref None): record the supporter's answer; a hard
    one tells the program leads and pauses the supporter. Returns the SMS reply."""
    person = answers.person_for_phone(ctx, phone)
    if person is None:
        return notify.text(ctx, "sms_reply_unknown_number")
    if score not in SCORES or not isinstance(person, Supporter):
        return notify.text(ctx, "sms_reply_checkin_which")
    prefix = ctx.program.program.case_prefix
    if ref is None:
        open_ones = ctx.db.checkins_open_for(person.record_id)
        if len(open_ones) != 1:
            return notify.text(ctx, "sms_reply_checkin_which")
        checkin = open_ones[0]
        ref = checkin["case_id"].rsplit("-", 1)[-1]
    else:
        checkin = ctx.db.checkin_for(f"{prefix}-{ref}", person.record_id)
        if checkin is None:
            return notify.text(ctx, "sms_reply_checkin_none", ref=ref)
    case_id, now = checkin["case_id"], ctx.now()
    if not ctx.db.checkin_answer(checkin["id"], score, now):
        return notify.text(ctx, "sms_reply_checkin_already", ref=ref)
    ctx.store.add_events([Event(case_id, "Supporter check-in answered", at=now,
                                actor=f"supporter:{person.record_id}")])
    log.info("check-in answered case=%s supporter=%s", case_id, person.record_id)
    if score not in HARD:
        return notify.text(ctx, "sms_reply_checkin_thanks", ref=ref)
    hard_answer(ctx, case_id, ref, person)
    return notify.text(ctx, "sms_reply_checkin_hard", ref=ref)


def hard_answer(ctx: Context, case_id: str, ref: str, supporter: Supporter) -> None:
    """Pause the supporter for `cooldown_days` and tell every program lead by email (the
    reference and the supporter's name only); once per case."""
    if ctx.db.milestone_done(case_id, "checkin_hard"):
        return
    until = ctx.now() + timedelta(days=ctx.program.wellbeing.cooldown_days)
    if supporter.paused_until is None or supporter.paused_until < until:
        ctx.store.update_supporter(supporter.record_id, paused_until=until)
    leads = [r for r in ctx.store.reviewers() if r.program_lead]
    for lead in leads:
        notify.send(ctx, case_id=case_id, kind="checkin_hard", template="checkin_hard_lead_email",
                    recipient=notify.Recipient(key=f"reviewer:{lead.record_id}", role="Program lead",
                                               email=lead.email),
                    values={"ref": ref, "supporter": supporter.name, "deadline": notify.show_time(ctx, until)})
    if not leads:
        log.error("nobody to tell case=%s kind=checkin_hard: the roster has no program lead", case_id)
    ctx.store.add_events([Event(case_id, f"Program leads told after the supporter's check-in; supporter paused "
                                f"until {notify.show_time(ctx, until)}", at=ctx.now())])
    ctx.db.milestone_mark(case_id, "checkin_hard", ctx.now())


def _supporter(ctx: Context, assigned: str) -> Supporter | None:
    """The case's supporter: Assigned Supporter holds their record id (or, set by hand, a name)."""
    if not assigned:
        return None
    return next((s for s in ctx.store.supporters() if assigned in (s.record_id, s.name)), None)
