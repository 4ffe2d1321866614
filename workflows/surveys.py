"""The one-time survey after a case (docs/architecture.md section 8).

`[followup] survey_after_days` after Contact Made At, the requester (by their preferred
channel, the other one when that is missing or fails) and the supporter (by SMS, else email)
each get a link to a short survey: `PUBLIC_BASE_URL/survey/<token>` (web/survey.py), or the
program's own Qualtrics or REDCap survey (`[survey] external_url`, sent as it is: it must
carry nothing identifying). The requester is the person the case is for: a colleague
referral reaches contact only once a reviewer confirmed the colleague agreed, and the
referrer is never asked. A withdrawn or purged case gets no survey.

The token is signed with SECRET_KEY and names a survey invitation, not the case: the
invitation holds who is asked (requester or supporter), the institution, the role and the
month, and the answers are stored with exactly those (table `survey_answers`), never with the
case. It works once: a second answer is refused kindly. The case gets Survey Sent At and an
Event per person asked; each is sent once however often or late `followup_clock` runs (the
ledger, and milestones marked after their Event).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeSerializer

from workflows import notify, watch, wellbeing
from workflows.errors import each_case
from workflows.model import Case, Event

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.surveys")

SURVEY_SALT = "peerline survey link"
RESPONDENTS = ("requester", "supporter")
CHANNEL_NAME = {"sms": "SMS", "email": "email"}


def run(ctx: Context) -> int:
    """Send every survey that is due. Returns how many cases had theirs sent now. Reads no
    case while none can be due (workflows/watch.py)."""
    run_ = watch.clock_start(ctx, "survey")
    if run_ is None:
        return 0
    cases = [c for c in wellbeing.after_contact(ctx) if c.status != "Withdrawn"]
    sent = each_case(ctx, cases, survey_due, log, "survey")
    watch.clock_read(ctx, run_, [m for case in cases for m in moments(ctx, case)])
    return sent


def moments(ctx: Context, case: Case) -> list:
    """When the surveys of this case are due, unless they went (workflows/watch.py)."""
    if case.contact_made_at is None or case.purged_at is not None or case.status == "Withdrawn" \
            or ctx.db.milestone_done(case.case_id, "survey"):
        return []
    return [case.contact_made_at + timedelta(days=ctx.program.followup.survey_after_days)]


def survey_due(ctx: Context, case: Case) -> int:
    due = case.contact_made_at + timedelta(days=ctx.program.followup.survey_after_days)
    if ctx.now() < due or ctx.db.milestone_done(case.case_id, "survey"):
        return 0
    for respondent in RESPONDENTS:
        if not ctx.db.milestone_done(case.case_id, f"survey_{respondent}"):
            _invite(ctx, case, respondent)
            ctx.db.milestone_mark(case.case_id, f"survey_{respondent}", ctx.now())
    ctx.store.update_case(case.case_id, survey_sent_at=ctx.now())
    ctx.db.milestone_mark(case.case_id, "survey", ctx.now())
    return 1


def _invite(ctx: Context, case: Case, respondent: str) -> None:
    if respondent == "requester":
        recipient = notify.Recipient(key="requester", role="Requester", phone=case.requester_phone,
                                     email=case.requester_email)
        preferred = ("email", "sms") if case.preferred_contact == "Email" else ("sms", "email")
        role = case.role
    else:
        supporter = wellbeing._supporter(ctx, case.assigned_supporter)
        if supporter is None:
            ctx.store.add_events([Event(case.case_id, "Supporter no longer in the roster: survey not sent",
                                        at=ctx.now())])
            return
        recipient = notify.Recipient(key=f"supporter:{supporter.record_id}", role="Supporter",
                                     phone=supporter.phone, email=supporter.email)
        preferred, role = ("sms", "email"), supporter.role
    channels = [c for c in preferred if (recipient.phone if c == "sms" else recipient.email)
                and f"survey_{respondent}_{c}" in ctx.templates]
    link = survey_link(ctx, respondent=respondent, institution=case.institution, role=role)
    for channel in channels:
        status = notify.send(ctx, case_id=case.case_id, kind=f"survey_{respondent}",
                             template=f"survey_{respondent}_{channel}", recipient=recipient,
                             values={"ref": case.ref, "link": link})
        if status != "failed":
            ctx.store.add_events([Event(case.case_id, f"Survey link sent to the {respondent} by "
                                        f"{CHANNEL_NAME[channel]}", at=ctx.now())])
            return
    ctx.store.add_events([Event(case.case_id, f"Survey link could not be sent to the {respondent}: no phone "
                                "or email that works", at=ctx.now())])


def survey_link(ctx: Context, *, respondent: str, institution: str, role: str) -> str:
    """The program's own survey as it is, or a new invitation's `/survey/<token>`."""
    external = ctx.program.survey.external_url
    if external:
        return external
    invitation = ctx.db.survey_invite(respondent=respondent, institution=institution or "", role=role or "",
                                      at=ctx.now())
    token = _serializer(ctx).dumps(invitation)
    return f"{ctx.settings['PUBLIC_BASE_URL'].rstrip('/')}/survey/{token}"


def open_invitation(ctx: Context, token: str) -> dict | None:
    """The invitation a genuine token names, or None."""
    try:
        invitation_id = int(_serializer(ctx).loads(token))
    except (BadSignature, TypeError, ValueError):
        log.warning("survey link refused: not genuine")
        return None
    return ctx.db.survey_invitation(invitation_id)


def questions(ctx: Context, invitation: dict):
    return ctx.program.survey.questions_for(invitation["respondent"])


def submit(ctx: Context, invitation: dict, form: dict) -> bool:
    """Store the answers (only known questions and choices; an unanswered question is left
    out), once. False when the invitation was answered already."""
    answers = {q.id: form[q.id] for q in questions(ctx, invitation) if form.get(q.id) in q.choices}
    stored = ctx.db.survey_answer(invitation["id"], answers, ctx.now())
    log.info("survey %s invitation=%s", "answered" if stored else "answered again: refused", invitation["id"])
    return stored


def _serializer(ctx: Context) -> URLSafeSerializer:
    return URLSafeSerializer(ctx.settings["SECRET_KEY"], salt=SURVEY_SALT)
