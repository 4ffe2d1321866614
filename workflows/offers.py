"""Approved cases offered to a supporter by SMS, the expiry of offers, and closing, withdrawing
and reassigning a case.

    Approved ─> offer to the best candidate (or the supporter a coordinator chose) by SMS
            ─> YES: Assigned; the supporter gets a private link, the requester is told
            ─> NO, silence past the expiry, or an SMS that cannot go: the next candidate
            ─> nobody left: Needs attention, and the reviewers are told once

Approval has one code path, `start_approved`, reached two ways: the store-changes poll
(`followup.poll`: the job `poll_approvals`, at once when an Airtable webhook pings and as a
safety net, workflows/watch.py), and `approve` (`flask cases approve`, the console). Nothing is offered before a reviewer sets Approved, so a request made
for a colleague waits for the reviewer who checked that the colleague agreed to be contacted.

What coordinators see lives in the case store: Status, Assigned Supporter (while Offered: the
supporter the case is offered to; then the one who has it), Offer Expires, Events, Messages.
Each offer (who, which round, and how it ended) lives in the service's own database: it is
what rules out the supporters who declined or let the offer run out, and what settles races.
Every change to one case's offers happens under the lock `offer:<Case ID>`, so two YES replies,
a YES racing the expiry task and a coordinator's CLI all see one order: exactly one wins.

A supporter's answers (YES, NO, DONE), what follows a YES and the private link are in
`workflows.answers`.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from workflows import matching, notify
from workflows.errors import describe_error
from workflows.model import Case, Event, Supporter
from workflows.records import BY_HAND, Offer

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.offers")

#: Offer states in the database that keep a supporter from being offered the case again.
RULED_OUT = ("declined", "expired", "unreachable", "no_contact")
#: Case statuses in which the assigned supporter's link shows the requester's details.
LINK_STATUSES = ("Assigned", "Contacted", "Referred")


# ---------------------------------------------------------------------------- approval

def approve(ctx: Context, case_id: str, *, supporter: Supporter | None = None, actor: str = "cli") -> str | None:
    """`flask cases approve`: what a reviewer does in Airtable (Status Approved, optionally an
    Assigned Supporter), then the same path as the poll. Returns what `start_approved` did."""
    with case_lock(ctx, case_id):
        case = ctx.store.find_case(case_id=case_id)
        if case is None:
            raise KeyError(f"no case {case_id}")
        if case.status not in ("New", "Needs attention", "Approved"):
            raise ValueError(f"{case_id} is {case.status}: only a New, Needs attention or Approved case "
                             "can be approved")
        changes = {"status": "Approved"}
        if supporter is not None:
            changes["assigned_supporter"] = supporter.record_id
        ctx.store.update_case(case_id, **changes)
        chosen = f", supporter chosen: {supporter.name}" if supporter else ""
        ctx.store.add_events([Event(case_id, f"Approved{chosen}", at=ctx.now(), actor=actor)])
    return start_approved(ctx, case_id, seen=False)


def start_approved(ctx: Context, case_id: str, *, seen: bool = True) -> str | None:
    """Offer an Approved case: to the supporter a coordinator chose in Assigned Supporter, else
    to the best candidate. Returns "offered", "needs a person", or None when the case is not
    Approved (any more). Safe to run any number of times, from any process: an offer left half
    made by a crash is finished, never made twice."""
    with case_lock(ctx, case_id):
        case = ctx.store.find_case(case_id=case_id)
        if case is None or case.status != "Approved":
            return None
        current = open_offer(ctx, case_id)
        if current is not None:
            if case.assigned_supporter in ("", current.supporter_id):
                # Made before a crash: finish it (its SMS goes once), or move on if it cannot go.
                if _finish_offer(ctx, case, current) == "offered":
                    return "offered"
                return offer_next(ctx, case)
            withdraw_offer(ctx, current, "a coordinator chose another supporter")
        if seen:
            ctx.store.add_events([Event(case_id, "Approval seen (Status set to Approved)", at=ctx.now(),
                                        actor="reviewer")])
        return offer_next(ctx, case, chosen=case.assigned_supporter)


# ---------------------------------------------------------------------------- making offers

def offer_next(ctx: Context, case: Case, *, chosen: str = "") -> str:
    """Offer the case to the chosen supporter, else the best candidate not ruled out; an SMS
    that cannot go rules its supporter out and the next one is tried."""
    supporters = ctx.store.supporters()
    by_id = {s.record_id: s for s in supporters}
    if chosen and chosen not in by_id:
        ctx.store.add_events([Event(case.case_id, "The chosen supporter is not in the roster: offering "
                                    "the best candidate instead", at=ctx.now())])
        chosen = ""
    while True:
        ruled_out = {o.supporter_id for o in ctx.db.offers_for_case(case.case_id) if o.status in RULED_OUT}
        if chosen:
            supporter, chosen = by_id[chosen], ""
        else:
            best = matching.rank(case, supporters, ctx.program, ctx.now(),
                                 open_cases=ctx.db.open_case_counts(),
                                 excluded=ruled_out, limit=1, recent_cases=recent_case_counts(ctx))
            if not best:
                return _nobody_left(ctx, case, supporters, ruled_out)
            supporter = best[0].supporter
        offer = ctx.db.offer_create(case_id=case.case_id, supporter_id=supporter.record_id,
                                    offered_at=ctx.now(), expires_at=offer_expiry(ctx, case))
        if _finish_offer(ctx, case, offer, supporter) == "offered":
            return "offered"


def _finish_offer(ctx: Context, case: Case, offer: Offer, supporter: Supporter | None = None) -> str:
    """Send the offer's SMS (once, through the ledger) and show the case as Offered."""
    supporter = supporter or supporter_by_id(ctx, offer.supporter_id)
    status = "failed" if supporter is None else notify.send(
        ctx, case_id=case.case_id, kind=f"offer-{offer.round}", template="offer_supporter_sms",
        recipient=supporter_recipient(supporter),
        values={"ref": case.ref, "deadline": notify.show_time(ctx, offer.expires_at)},
        crisis=is_urgent(case))
    name = supporter.name if supporter else "a supporter no longer in the roster"
    if status == "failed":
        if ctx.db.offer_close(offer.id, "unreachable", ctx.now()):
            ctx.store.add_events([Event(case.case_id, f"Offer to {name} could not be sent by SMS (offer "
                                        f"{offer.round}): trying the next supporter", at=ctx.now())])
        return "unreachable"
    ctx.store.update_case(case.case_id, status="Offered", assigned_supporter=offer.supporter_id,
                          offer_expires=offer.expires_at)
    event_once(ctx, case.case_id, f"offer-{offer.round}",
                f"Offered to {name} by SMS (offer {offer.round}), answer due "
                f"{notify.show_time(ctx, offer.expires_at)}")
    log.info("offer made case=%s round=%s supporter=%s sms=%s", case.case_id, offer.round,
             offer.supporter_id, status)
    return "offered"


def recent_case_counts(ctx: Context) -> dict[str, int]:
    """Supporter record id -> offers they accepted in the last 30 days (our offers table):
    what `[wellbeing] max_cases_per_month` caps in matching."""
    return dict(ctx.db.accepted_counts_since(ctx.now() - timedelta(days=30)))


def offer_expiry(ctx: Context, case: Case) -> datetime:
    """When an offer made now runs out: program.toml [offers] (4 h; 30 min for Urgent and
    Crisis), counted from when the SMS can go (a routine SMS waits out quiet hours)."""
    cfg = ctx.program.offers
    window = timedelta(minutes=cfg.urgent_expiry_minutes) if is_urgent(case) \
        else timedelta(hours=cfg.expiry_hours)
    return (notify.sms_held_until(ctx, crisis=is_urgent(case)) or ctx.now()) + window


def _nobody_left(ctx: Context, case: Case, supporters: list[Supporter], ruled_out: set) -> str:
    """No candidate is left: the case goes back to a coordinator, who chooses; the reviewers
    are told once."""
    suggestions = matching.suggested_supporters(
        case, supporters, ctx.program, ctx.now(),
        open_cases=ctx.db.open_case_counts(), excluded=ruled_out,
        recent_cases=recent_case_counts(ctx))
    ctx.store.update_case(case.case_id, status="Needs attention", assigned_supporter="", offer_expires=None,
                          suggested_supporters=suggestions)
    tell_reviewers_once(ctx, case, "needs_person", ("needs_person_reviewer_sms", "needs_person_reviewer_email"),
                        event="No supporter left to offer: reviewers told the case needs a person chosen")
    log.warning("no supporter left to offer case=%s", case.case_id)
    return "needs a person"


def tell_reviewers_once(ctx: Context, case: Case, kind: str, templates: tuple[str, ...], *, event: str,
                        reviewers: list | None = None, deadline: datetime | None = None) -> bool:
    """Tell the case's reviewers (its institution's and the program leads, unless `reviewers`
    says who) by each template, and write `event`: all once per case and kind, whoever runs it
    and however often. Returns whether it happened now."""
    if ctx.db.milestone_done(case.case_id, kind):
        return False
    people = reviewers if reviewers is not None else notify.reviewers_for(ctx, case.institution)
    values = {"ref": case.ref, "link": notify.coordinator_link(ctx, case.case_id),
              "deadline": notify.show_time(ctx, deadline or case.review_due or ctx.now()),
              "institution": ctx.program.institution_name(case.institution, "not given"),
              "urgency": case.urgency, "role": case.role or "not given"}
    for person in people:
        recipient = notify.Recipient(key=f"reviewer:{person.record_id}",
                                     role="Program lead" if person.program_lead else "Reviewer",
                                     phone=person.phone, email=person.email)
        for template in templates:
            notify.send(ctx, case_id=case.case_id, kind=kind, template=template, recipient=recipient,
                        values=values, crisis=case.urgency == "Crisis")
    if not people:
        log.error("no one to tell case=%s kind=%s: the roster has no reviewer or program lead", case.case_id, kind)
    ctx.store.add_events([Event(case.case_id, event, at=ctx.now())])
    ctx.db.milestone_mark(case.case_id, kind, ctx.now())
    return True


# ---------------------------------------------------------------------------- expiry

def expire_due(ctx: Context) -> int:
    """The periodic task: every open offer past its expiry ends, and its case goes to the next
    candidate. Safe to run twice or late: an offer ends once, under its case's lock."""
    ended = 0
    for offer in ctx.db.offers_expired(ctx.now()):
        try:
            with case_lock(ctx, offer.case_id):
                current = ctx.db.offer_get(offer.id)
                if current.status == "open" and current.expires_at <= ctx.now():
                    expire_offer(ctx, current)
                    ended += 1
        except Exception as exc:
            log.error("offer expiry failed case=%s offer=%s error=%s", offer.case_id, offer.id,
                      describe_error(exc))
    return ended


def expire_offer(ctx: Context, offer: Offer) -> None:
    """End an open offer whose time is up (the caller holds the case lock), and move on."""
    case = ctx.store.find_case(case_id=offer.case_id)
    if not still_offered(ctx, case, offer):
        withdraw_offer(ctx, offer, "the case changed meanwhile")
        return
    if not ctx.db.offer_close(offer.id, "expired", ctx.now()):
        return
    supporter = supporter_by_id(ctx, offer.supporter_id)
    ctx.store.add_events([Event(case.case_id, f"Offer to {supporter.name if supporter else 'a supporter'} "
                                f"ran out without an answer (offer {offer.round})", at=ctx.now())])
    offer_next(ctx, case)


# ---------------------------------------------------------------------------- closing

def close(ctx: Context, case_id: str, *, actor: str = "cli", event: str = "Closed") -> Case:
    """`flask cases close`: the case is Closed; an open offer is withdrawn (a late YES is
    told the case is covered) and the supporter's link stops working. `event`: the Event's
    text (workflows/followup.py says why it closed itself)."""
    with case_lock(ctx, case_id):
        case = ctx.store.find_case(case_id=case_id)
        if case is None:
            raise KeyError(f"no case {case_id}")
        if case.status == "Closed":
            return case
        current = open_offer(ctx, case_id)
        if current is not None:
            withdraw_offer(ctx, current, "the case was closed")
        case = ctx.store.update_case(case_id, status="Closed", closed_at=ctx.now(), offer_expires=None)
        ctx.store.add_events([Event(case_id, event, at=ctx.now(), actor=actor)])
        ctx.db.milestone_mark(case_id, "closed", ctx.now())
    return case


def withdraw(ctx: Context, case_id: str, *, actor: str = "cli", reason: str = "") -> Case:
    """`flask cases withdraw` and the console: the request is Withdrawn (the requester, or the
    colleague they asked for, no longer wants support); an open offer is withdrawn and the
    supporter's link stops working at once. `reason`: a phrase of the fixed vocabulary
    (workflows/followup.py WITHDRAW_REASONS), shown in the Event "Withdrawn: <reason>"."""
    with case_lock(ctx, case_id):
        case = ctx.store.find_case(case_id=case_id)
        if case is None:
            raise KeyError(f"no case {case_id}")
        if case.status in ("Withdrawn", "Closed"):
            raise ValueError(f"{case_id} is {case.status}: only an open case can be withdrawn")
        current = open_offer(ctx, case_id)
        if current is not None:
            withdraw_offer(ctx, current, "the request was withdrawn")
        case = ctx.store.update_case(case_id, status="Withdrawn", offer_expires=None)
        ctx.store.add_events([Event(case_id, f"Withdrawn: {reason}" if reason else "Withdrawn", at=ctx.now(),
                                    actor=actor)])
        ctx.db.milestone_mark(case_id, "withdrawn", ctx.now())
    return case


def hand_back(ctx: Context, case_id: str, offer: Offer, *, actor: str) -> str:
    """The supporter who accepted could not reach the person (their page): their offer ends as
    no_contact (they are not offered this case again) and the case goes to the next candidate,
    or back to the reviewers when nobody is left. Returns "offered" or "needs a person"."""
    with case_lock(ctx, case_id):
        case = ctx.store.find_case(case_id=case_id)
        current = ctx.db.offer_get(offer.id)
        if case is None or current is None or current.status != "accepted" or case.status != "Assigned" \
                or case.assigned_supporter != current.supporter_id:
            raise ValueError(f"{case_id} is {case.status if case else 'gone'}: only an Assigned case that is "
                             "still yours can be handed back")
        ctx.db.offer_update(current.id, status="no_contact")
        supporter = supporter_by_id(ctx, current.supporter_id)
        ctx.store.add_events([Event(case_id, f"{supporter.name if supporter else 'The supporter'} could not reach "
                                    f"the person (offer {current.round}): offering the next supporter",
                                    at=ctx.now(), actor=actor)])
        ctx.store.update_case(case_id, status="Approved", assigned_supporter="", offer_expires=None)
        return offer_next(ctx, ctx.store.find_case(case_id=case_id))


def reassign(ctx: Context, case_id: str, supporter: Supporter, *, actor: str = "cli") -> str | None:
    """Give an Offered or Assigned case (or one in Needs attention) to another supporter: what a
    coordinator does in Airtable by setting Assigned Supporter and Status Approved. The open
    offer is withdrawn, the previous supporter's link stops working, and the chosen supporter
    is offered the case by SMS (the same path as an approval)."""
    with case_lock(ctx, case_id):
        case = ctx.store.find_case(case_id=case_id)
        if case is None:
            raise KeyError(f"no case {case_id}")
        if case.status not in ("Needs attention", "Approved", "Offered", "Assigned"):
            raise ValueError(f"{case_id} is {case.status}: only a case in Needs attention, Approved, Offered "
                             "or Assigned can be given to another supporter")
        if case.assigned_supporter == supporter.record_id and case.status in ("Offered", "Assigned"):
            raise ValueError(f"{case_id} is already with {supporter.name}")
        current = open_offer(ctx, case_id)
        if current is not None:
            withdraw_offer(ctx, current, "a coordinator chose another supporter")
        ctx.store.update_case(case_id, status="Approved", assigned_supporter=supporter.record_id,
                              offer_expires=None)
        ctx.store.add_events([Event(case_id, f"Reassigned: supporter chosen: {supporter.name}", at=ctx.now(),
                                    actor=actor)])
    return start_approved(ctx, case_id, seen=False)


# ---------------------------------------------------------------------------- helpers

def case_lock(ctx: Context, case_id: str):
    return ctx.db.lock(f"offer:{case_id}", ttl_seconds=int(ctx.settings.get("INBOX_LEASE_SECONDS") or 300),
                       wait_seconds=30)


def open_offer(ctx: Context, case_id: str) -> Offer | None:
    return next((o for o in ctx.db.offers_for_case(case_id) if o.status == "open"), None)


def still_offered(ctx: Context, case: Case | None, offer: Offer) -> bool:
    """The case still waits for this open offer's answer, unless a coordinator changed it: set
    another Status, or put someone we never offered it to in Assigned Supporter. (A case that
    still shows an earlier supporter of ours is one our own write missed after the SMS went.)"""
    if case is None or case.status != "Offered":
        return False
    if case.assigned_supporter == offer.supporter_id:
        return True
    ours = {o.supporter_id for o in ctx.db.offers_for_case(case.case_id) if o.status != BY_HAND}
    return case.assigned_supporter in ours | {""}


def withdraw_offer(ctx: Context, offer: Offer, why: str) -> None:
    if ctx.db.offer_close(offer.id, "withdrawn", ctx.now()):
        ctx.store.add_events([Event(offer.case_id, f"Offer {offer.round} withdrawn: {why}", at=ctx.now())])


def send_message(ctx: Context, **message) -> str:
    """notify.send, where a message another worker holds (or died holding) counts as on its
    way: its intent is in the ledger and the periodic delivery sends it once the claim runs out."""
    try:
        return notify.send(ctx, **message)
    except notify.MessageInFlight:
        return "sending"


def event_once(ctx: Context, case_id: str, milestone: str, text: str) -> None:
    if ctx.db.milestone_done(case_id, milestone):
        return
    ctx.store.add_events([Event(case_id, text, at=ctx.now())])
    ctx.db.milestone_mark(case_id, milestone, ctx.now())


def supporter_by_id(ctx: Context, record_id: str) -> Supporter | None:
    return next((s for s in ctx.store.supporters() if s.record_id == record_id), None)


def supporter_recipient(supporter: Supporter) -> notify.Recipient:
    return notify.Recipient(key=f"supporter:{supporter.record_id}", role="Supporter", phone=supporter.phone,
                            email=supporter.email)


def is_urgent(case: Case) -> bool:
    return case.urgency in ("Urgent", "Crisis")


def case_by_ref(ctx: Context, ref: str) -> Case | None:
    prefix = ctx.program.program.case_prefix
    return ctx.store.find_case(case_id=f"{prefix}-{ref}")

