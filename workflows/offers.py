"""Offers of a case to a supporter, and their answers by SMS.

`integrations.twilio` parses a supporter's text (YES 4821, NO 4821, DONE 4821, a bare YES)
and calls the function here for it; each returns the short reply to send back. A number that
is not in the roster gets the same generic reply whatever it asks, so a stranger learns
nothing. The replies are texts from config/messages.toml.

Making offers (who is offered what, expiry, the next candidate) is built by the matching and
offers work. Until offers are made nobody has an open offer, and YES and NO say so truthfully;
DONE records contact on a case a coordinator assigned to the sender.
"""
from __future__ import annotations

from workflows import notify
from workflows.model import Case, Event, Reviewer, Supporter


def person_for_phone(ctx, phone: str) -> Supporter | Reviewer | None:
    """The supporter (or else reviewer) whose roster phone is `phone`."""
    wanted = notify.normalize_phone(phone)
    if not wanted:
        return None
    for person in [*ctx.store.supporters(), *ctx.store.reviewers()]:
        if person.phone and notify.normalize_phone(person.phone) == wanted:
            return person
    return None


def open_offers(ctx, supporter: Supporter) -> list[Case]:
    """Cases currently offered to this supporter and not yet answered. No offers are made
    yet (see the module docstring), so there are none."""
    return []


def accept(ctx, phone: str, ref: str) -> str:
    """YES <ref>: the supporter takes the case offered to them."""
    person = person_for_phone(ctx, phone)
    if person is None:
        return notify.text(ctx, "sms_reply_unknown_number")
    if not isinstance(person, Supporter) or not _offer(ctx, person, ref):
        return notify.text(ctx, "sms_reply_no_open_offer", ref=ref)
    raise NotImplementedError("accepting an offer is built with the offers workflow")


def accept_only_offer(ctx, phone: str) -> str:
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


def decline(ctx, phone: str, ref: str) -> str:
    """NO <ref>: the supporter cannot take the case; it goes to the next candidate."""
    person = person_for_phone(ctx, phone)
    if person is None:
        return notify.text(ctx, "sms_reply_unknown_number")
    if not isinstance(person, Supporter) or not _offer(ctx, person, ref):
        return notify.text(ctx, "sms_reply_no_open_offer", ref=ref)
    raise NotImplementedError("declining an offer is built with the offers workflow")


def contact_made(ctx, phone: str, ref: str) -> str:
    """DONE <ref>: the assigned supporter has reached the requester."""
    person = person_for_phone(ctx, phone)
    if person is None:
        return notify.text(ctx, "sms_reply_unknown_number")
    case = _case_by_ref(ctx, ref)
    if not isinstance(person, Supporter) or case is None or case.status not in ("Assigned", "Contacted") \
            or case.assigned_supporter not in (person.record_id, person.name):
        return notify.text(ctx, "sms_reply_not_assigned", ref=ref)
    if case.contact_made_at is None:
        ctx.store.update_case(case.case_id, contact_made_at=ctx.now(), status="Contacted")
        ctx.store.add_events([Event(case_id=case.case_id, event="Contact made (supporter's SMS)",
                                    at=ctx.now(), actor=f"supporter:{person.record_id}")])
    return notify.text(ctx, "sms_reply_contact_recorded", ref=ref)


def _offer(ctx, supporter: Supporter, ref: str) -> Case | None:
    return next((c for c in open_offers(ctx, supporter) if c.ref == ref), None)


def _case_by_ref(ctx, ref: str) -> Case | None:
    prefix = ctx.program["program"].get("case_prefix", "PS")
    return ctx.store.find_case(case_id=f"{prefix}-{ref}")
