"""A supporter's side of an offer: their answers by SMS (YES, a bare YES, NO, DONE), what follows
a YES (the private link by SMS and email, the requester told when to expect contact), and the
private link itself.

`workflows.sms_commands` reads a supporter's text and calls `accept`, `accept_only_offer`,
`decline` or `contact_made`; each returns the short reply. A number that is not in the roster
gets the same generic reply whatever it asks. Every change to a case's offers happens under the
case's lock (`offers.case_lock`), so two YES replies, a YES racing the expiry task and a
coordinator all see one order: exactly one wins.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeSerializer

from workflows import notify, phones
from workflows.errors import describe_error
from workflows.model import Case, Event, Reviewer, Supporter
from workflows.offers import (LINK_STATUSES, case_by_ref, case_lock, event_once, expire_offer, offer_next,
                              send_message, still_offered, supporter_recipient, withdraw_offer)
from workflows.records import BY_HAND, Offer

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.offers")

LINK_SALT = "peerline supporter link"


# ---------------------------------------------------------------------------- answers by SMS

def person_for_phone(ctx: Context, phone: str) -> Supporter | Reviewer | None:
    """The supporter (or else reviewer) whose roster phone is `phone`."""
    region = phones.region(ctx.program)
    wanted = phones.e164(phone, region)
    if not wanted:
        return None
    for person in [*ctx.store.supporters(), *ctx.store.reviewers()]:
        if person.phone and phones.e164(person.phone, region) == wanted:
            return person
    return None


def open_offers(ctx: Context, supporter: Supporter) -> list[Case]:
    """Cases offered to this supporter, not yet answered and not past their expiry."""
    found = []
    for offer in ctx.db.offers_open_for(supporter.record_id, ctx.now()):
        case = ctx.store.find_case(case_id=offer.case_id)
        if still_offered(ctx, case, offer):
            found.append(case)
    return found


def _sender_and_case(ctx: Context, phone: str, ref: str):
    """(supporter, case, None), or (.., .., the reply) when the sender is unknown (the
    generic reply) or no case of theirs has that reference."""
    person = person_for_phone(ctx, phone)
    if person is None:
        return None, None, notify.text(ctx, "sms_reply_unknown_number")
    case = case_by_ref(ctx, ref) if isinstance(person, Supporter) else None
    if case is None:
        return person, None, notify.text(ctx, "sms_reply_no_open_offer", ref=ref)
    return person, case, None


def _case_and_offers_to(ctx: Context, case_id: str, person: Supporter):
    """The case as it is now, and the offers of it made to this supporter (oldest first; a case
    given to them by hand was never offered). Called under the case's lock, so the answer
    cannot change underneath."""
    case = ctx.store.find_case(case_id=case_id)
    return case, [o for o in ctx.db.offers_for_case(case_id)
                  if o.supporter_id == person.record_id and o.status != BY_HAND]


def accept(ctx: Context, phone: str, ref: str) -> str:
    """YES <ref>: the supporter takes the case offered to them. Exactly one YES wins; a late
    one (after the expiry, after a NO, after someone else took it) is thanked and told the
    case is covered."""
    person, case, reply = _sender_and_case(ctx, phone, ref)
    if reply:
        return reply
    with case_lock(ctx, case.case_id):
        case, mine = _case_and_offers_to(ctx, case.case_id, person)
        if not mine:
            return notify.text(ctx, "sms_reply_no_open_offer", ref=ref)     # never offered to them
        offer = mine[-1]
        if offer.status == "accepted" and case.status in LINK_STATUSES \
                and case.assigned_supporter == person.record_id:
            after_accept(ctx, case, person, offer)     # a repeated YES: finish anything left undone
            return notify.text(ctx, "sms_reply_accepted", ref=ref)
        if offer.status == "open" and offer.expires_at <= ctx.now():
            expire_offer(ctx, offer)
            return notify.text(ctx, "sms_reply_covered", ref=ref)
        if offer.status != "open":
            return notify.text(ctx, "sms_reply_covered", ref=ref)
        if not still_offered(ctx, case, offer):
            withdraw_offer(ctx, offer, "the case changed meanwhile")
            return notify.text(ctx, "sms_reply_covered", ref=ref)
        now = ctx.now()
        ctx.db.offer_close(offer.id, "accepted", now)
        offer = ctx.db.offer_get(offer.id)
        case = ctx.store.update_case(case.case_id, status="Assigned", assigned_supporter=person.record_id,
                                     offer_expires=None)
        ctx.store.update_supporter(person.record_id, last_assigned_at=now)
        ctx.store.add_events([Event(case.case_id, f"Accepted by {person.name} (offer {offer.round})", at=now,
                                    actor=f"supporter:{person.record_id}")])
        log.info("offer accepted case=%s round=%s supporter=%s", case.case_id, offer.round, person.record_id)
        try:
            after_accept(ctx, case, person, offer)
        except Exception as exc:
            # The case is theirs either way. Messages whose intent is recorded go with the
            # periodic delivery; a repeated YES, or the contact check, finishes the rest.
            log.error("after-accept messages incomplete case=%s error=%s", case.case_id, describe_error(exc))
    return notify.text(ctx, "sms_reply_accepted", ref=ref)


def accept_only_offer(ctx: Context, phone: str) -> str:
    """A bare YES: accepts the sender's offer when they have exactly one open."""
    person = person_for_phone(ctx, phone)
    if person is None:
        return notify.text(ctx, "sms_reply_unknown_number")
    offers = open_offers(ctx, person) if isinstance(person, Supporter) else []
    if not offers:
        return notify.text(ctx, "sms_reply_no_open_offers")
    if len(offers) > 1:
        return notify.text(ctx, "sms_reply_several_open_offers")
    return accept(ctx, phone, offers[0].ref)


def decline(ctx: Context, phone: str, ref: str) -> str:
    """NO <ref>: the supporter cannot take the case; it goes to the next candidate at once."""
    person, case, reply = _sender_and_case(ctx, phone, ref)
    if reply:
        return reply
    with case_lock(ctx, case.case_id):
        case, mine = _case_and_offers_to(ctx, case.case_id, person)
        offer = mine[-1] if mine else None
        if offer is None or offer.status != "open":
            return notify.text(ctx, "sms_reply_no_open_offer", ref=ref)
        if offer.expires_at <= ctx.now():
            expire_offer(ctx, offer)
            return notify.text(ctx, "sms_reply_covered", ref=ref)
        if not still_offered(ctx, case, offer):
            withdraw_offer(ctx, offer, "the case changed meanwhile")
            return notify.text(ctx, "sms_reply_covered", ref=ref)
        ctx.db.offer_close(offer.id, "declined", ctx.now())
        ctx.store.add_events([Event(case.case_id, f"Declined by {person.name} (offer {offer.round})",
                                    at=ctx.now(), actor=f"supporter:{person.record_id}")])
        offer_next(ctx, case)
    return notify.text(ctx, "sms_reply_declined", ref=ref)


def contact_made(ctx: Context, phone: str, ref: str) -> str:
    """DONE <ref>: the assigned supporter has reached the requester."""
    person = person_for_phone(ctx, phone)
    if person is None:
        return notify.text(ctx, "sms_reply_unknown_number")
    case = case_by_ref(ctx, ref)
    if not isinstance(person, Supporter) or case is None or case.status not in ("Assigned", "Contacted") \
            or case.assigned_supporter not in (person.record_id, person.name):
        return notify.text(ctx, "sms_reply_not_assigned", ref=ref)
    if case.contact_made_at is None:
        ctx.store.update_case(case.case_id, contact_made_at=ctx.now(), status="Contacted")
        ctx.store.add_events([Event(case_id=case.case_id, event="Contact made (supporter's SMS)",
                                    at=ctx.now(), actor=f"supporter:{person.record_id}")])
    return notify.text(ctx, "sms_reply_contact_recorded", ref=ref)


# ---------------------------------------------------------------------------- after YES

def after_accept(ctx: Context, case: Case, supporter: Supporter, offer: Offer) -> None:
    """The supporter's private link by SMS and email, and the requester told someone will
    reach out and by when. Each message once (the ledger); safe to repeat."""
    deadline = notify.show_time(ctx, contact_due(ctx, offer.answered_at, case.urgency))
    values = {"ref": case.ref, "link": supporter_link(ctx, offer), "deadline": deadline}
    for template in ("supporter_link_sms", "supporter_link_email"):
        # The supporter has just texted us: the link goes now, whatever the hour.
        send_message(ctx, case_id=case.case_id, kind="supporter_link", template=template,
              recipient=supporter_recipient(supporter), values=values, crisis=True)
    event_once(ctx, case.case_id, "supporter_link", f"Private link sent to {supporter.name} by SMS and email")
    tell_requester(ctx, case, deadline)


def tell_requester(ctx: Context, case: Case, deadline: str) -> str:
    """"A peer supporter will reach out by ..." through the requester's preferred channel, the
    other one when that is missing or fails. Names no supporter."""
    requester = notify.Recipient(key="requester", role="Requester", phone=case.requester_phone,
                                 email=case.requester_email)
    preferred = ("email", "sms") if case.preferred_contact == "Email" else ("sms", "email")
    channels = [c for c in preferred if (requester.phone if c == "sms" else requester.email)]
    status = "failed"
    # A colleague did not ask: their messages say a colleague asked us to reach out.
    who = "colleague" if case.for_whom == "Colleague" else "requester"
    for channel in channels:
        status = send_message(ctx, case_id=case.case_id, kind="requester_told",
                       template=f"{who}_told_{channel}", recipient=requester,
                       values={"ref": case.ref, "deadline": deadline}, crisis=case.urgency == "Crisis")
        if status != "failed":
            event_once(ctx, case.case_id, "requester_told",
                        f"Requester told by {'SMS' if channel == 'sms' else 'email'} that a supporter will reach out")
            break
    else:
        event_once(ctx, case.case_id, "requester_told", "Requester could not be told: no phone or email that works")
    return status


def contact_due(ctx: Context, accepted_at: datetime, urgency: str) -> datetime:
    """When the supporter is asked to have reached out, and what the requester is promised:
    program.toml [offers] contact_window_hours, or urgent_contact_window_hours for an Urgent
    or Crisis request ("today, if possible" must not be promised two days)."""
    cfg = ctx.program.offers
    hours = cfg.urgent_contact_window_hours if urgency in ("Urgent", "Crisis") else cfg.contact_window_hours
    return accepted_at + timedelta(hours=hours)


def accepted_offer(ctx: Context, case: Case) -> Offer | None:
    """The offer through which the case's assigned supporter took it."""
    found = [o for o in ctx.db.offers_for_case(case.case_id)
             if o.status == "accepted" and o.supporter_id == case.assigned_supporter]
    return found[-1] if found else None


# ---------------------------------------------------------------------------- the private link

def supporter_link(ctx: Context, offer: Offer, *, now: datetime | None = None) -> str:
    """`PUBLIC_BASE_URL/s/<token>`: signed with SECRET_KEY, naming one accepted offer (so one
    case and one supporter, ids only) and when it stops working (program.toml [offers]
    link_valid_hours from now)."""
    hours = ctx.program.offers.link_valid_hours
    until = (now or ctx.now()) + timedelta(hours=hours)
    token = _serializer(ctx).dumps([offer.id, int(until.timestamp())])
    return f"{ctx.settings['PUBLIC_BASE_URL'].rstrip('/')}/s/{token}"


def open_link(ctx: Context, token: str) -> tuple[Case | None, Offer | None]:
    """What a link shows: (case, offer) while it is genuine, unexpired, and its supporter
    still has the case; (None, offer-or-None) otherwise. A genuine opening, and a genuine
    link opened too late, are recorded as Events."""
    try:
        offer_id, until = _serializer(ctx).loads(token)
        offer = ctx.db.offer_get(int(offer_id))
    except (BadSignature, TypeError, ValueError):
        log.warning("supporter link refused: not genuine")
        return None, None
    if offer is None or offer.status != "accepted":
        return None, None
    case = ctx.store.find_case(case_id=offer.case_id)
    if case is None:
        return None, offer
    expired = datetime.fromtimestamp(until, timezone.utc) <= ctx.now()
    if expired or case.status not in LINK_STATUSES or case.assigned_supporter != offer.supporter_id \
            or case.purged_at is not None:
        ctx.store.add_events([Event(case.case_id, "Supporter link opened after it stopped working", at=ctx.now(),
                                    actor=f"supporter:{offer.supporter_id}")])
        return None, offer
    ctx.store.add_events([Event(case.case_id, "Supporter link opened", at=ctx.now(),
                                actor=f"supporter:{offer.supporter_id}")])
    return case, offer


def _serializer(ctx: Context) -> URLSafeSerializer:
    return URLSafeSerializer(ctx.settings["SECRET_KEY"], salt=LINK_SALT)
