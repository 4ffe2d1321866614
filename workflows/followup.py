"""After the first contact (docs/architecture.md section 8, part A): contact made from the
supporter's page, a supporter who could not reach the person, third-tier referral, closing and
withdrawing. (Part B, the supporter's check-in and the surveys: workflows/wellbeing.py,
workflows/surveys.py.)

    Assigned ─> contact made (DONE 4821, or the supporter's page) ─> Contacted
             ─> could not reach them (the page) ─> the next candidate, or the reviewers
    Assigned | Contacted | Referred ─> referral (the page, the console, `flask cases refer`,
             or Tier 3 Referral set in Airtable) ─> Referred; the requester gets a private
             `/r/<token>` link to the chosen Resources by their preferred channel
    Contacted | Referred, contact made `[followup] close_after_days` ago, no open offer ─> Closed
    any open case ─> Withdrawn (a reason of WITHDRAW_REASONS): offers and links end at once

Every step is an Event, written once: the periodic jobs `auto_close` and the store-changes
`poll` (which notices what a coordinator did in Airtable: Status Approved, Closed or Withdrawn,
Tier 3 Referral) may run any number of times, late, or on two workers at once. A referral's message goes once per set of
resources (the ledger's kind names them), so a second, different referral is sent too.
"""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeSerializer

from workflows import deadlines, notify, offers, surveys, watch, wellbeing
from workflows.errors import describe_error
from workflows.model import OPEN_STATUSES, Case, Event, Resource, link_ids  # noqa: F401 (link_ids re-exported)
from workflows.records import TAKEN

if TYPE_CHECKING:
    from workflows.context import Context
    from workflows.records import Offer

log = logging.getLogger("peerline.followup")

#: Statuses in which a case can be referred: a supporter has it (and, for a request made for a
#: colleague, a reviewer approved it only once the colleague agreed to be contacted).
REFERRABLE = ("Assigned", "Contacted", "Referred")
#: The milestones of a case that has ended: it no longer counts for its supporter.
ENDED = ("closed", "withdrawn")
#: Why a request is withdrawn (`flask cases withdraw --reason`, the console): word -> the phrase
#: in the Event "Withdrawn: <phrase>". Never free text.
WITHDRAW_REASONS = {
    "no-longer-wanted": "the requester no longer wants support",
    "colleague-declined": "the colleague declined",
    "duplicate": "a duplicate request",
    "got-help-elsewhere": "the requester found support elsewhere",
    "other": "another reason",
}
RESOURCES_SALT = "peerline resources link"


# ---------------------------------------------------------------------------- the supporter's page

def record_contact(ctx: Context, case: Case, offer: Offer) -> bool:
    """"I have reached them" on the supporter's page: the same as DONE <ref>. Returns whether
    it was recorded now (False: it was already)."""
    with offers.case_lock(ctx, case.case_id):
        case = ctx.store.find_case(case_id=case.case_id)
        if case is None or case.contact_made_at is not None:
            return False
        if case.status != "Assigned" or case.assigned_supporter != offer.supporter_id:
            raise ValueError(f"{case.case_id} is {case.status}: contact can be recorded on an Assigned case only")
        ctx.store.update_case(case.case_id, contact_made_at=ctx.now(), status="Contacted")
        ctx.store.add_events([Event(case.case_id, "Contact made (supporter's page)", at=ctx.now(),
                                    actor=f"supporter:{offer.supporter_id}")])
    return True


def could_not_reach(ctx: Context, case: Case, offer: Offer) -> str:
    """"I could not reach them" on the supporter's page: the case goes to the next candidate,
    or to the reviewers when nobody is left (offers.hand_back)."""
    return offers.hand_back(ctx, case.case_id, offer, actor=f"supporter:{offer.supporter_id}")


# ---------------------------------------------------------------------------- referral

def resources_for(ctx: Context, case: Case) -> list[Resource]:
    """What a case can be referred to: its institution's Resources, then the network's shared
    ones (a Resource with no Institution)."""
    found = ctx.store.resources()
    own = [r for r in found if case.institution and r.institution == case.institution]
    return own + [r for r in found if not r.institution]


def resources_named(ctx: Context, case: Case, names: list[str]) -> list[Resource]:
    """The case's Resources with these names (any case, spaces); KeyError naming the first
    that is not one of them."""
    choices = resources_for(ctx, case)
    chosen = []
    for name in names:
        wanted = " ".join(name.split()).casefold()
        match = next((r for r in choices if " ".join(r.name.split()).casefold() == wanted), None)
        if match is None:
            raise KeyError(f"No resource named {name!r} for {case.case_id} (its institution's and the shared "
                           f"ones: {', '.join(r.name for r in choices) or 'none'})")
        chosen.append(match)
    return chosen


def refer(ctx: Context, case_id: str, resource_ids: list[str], *, actor: str) -> Case:
    """Refer a case to these Resources (record ids): Referred, Tier 3 Referral set, Event;
    then the requester gets their private link (`send_referral`)."""
    with offers.case_lock(ctx, case_id):
        case = ctx.store.find_case(case_id=case_id)
        if case is None:
            raise KeyError(f"no case {case_id}")
        if case.status not in REFERRABLE:
            raise ValueError(f"{case_id} is {case.status}: only a case a supporter has (Assigned, Contacted or "
                             "Referred) can be referred")
        allowed = {r.record_id: r for r in resources_for(ctx, case)}
        ids = list(dict.fromkeys(resource_ids))
        if not ids:
            raise ValueError("Choose at least one resource.")
        unknown = [i for i in ids if i not in allowed]
        if unknown:
            raise ValueError(f"{case_id} cannot be referred to a resource of another institution or one no "
                             "longer listed")
        case = ctx.store.update_case(case_id, status="Referred", tier3_referral=",".join(ids))
        ctx.store.add_events([Event(case_id, "Referred to " + ", ".join(allowed[i].name for i in ids),
                                    at=ctx.now(), actor=actor)])
    send_referral(ctx, case)
    return case


def _referral_kind(case: Case) -> str:
    digest = hashlib.sha256(",".join(sorted(link_ids(case.tier3_referral))).encode()).hexdigest()[:10]
    return f"referral-{digest}"


def send_referral(ctx: Context, case: Case) -> str:
    """The requester's private link to their Resources, by their preferred channel (the other
    when that one is missing or fails); once per set of resources. The SMS carries the link
    and the program's name only."""
    kind = _referral_kind(case)
    requester = notify.Recipient(key="requester", role="Requester", phone=case.requester_phone,
                                 email=case.requester_email)
    preferred = ("email", "sms") if case.preferred_contact == "Email" else ("sms", "email")
    channels = [c for c in preferred if (requester.phone if c == "sms" else requester.email)]
    status = "failed"
    for channel in channels:
        status = offers.send_message(ctx, case_id=case.case_id, kind=kind, template=f"referral_requester_{channel}",
                              recipient=requester, values={"ref": case.ref, "link": resources_link(ctx, case)})
        if status != "failed":
            offers.event_once(ctx, case.case_id, kind, f"Resources link sent to the requester by "
                                                        f"{'SMS' if channel == 'sms' else 'email'}")
            break
    else:
        offers.event_once(ctx, case.case_id, kind, "Resources link could not be sent: no phone or email that works")
    return status


def resources_link(ctx: Context, case: Case) -> str:
    """`PUBLIC_BASE_URL/r/<token>`: signed with SECRET_KEY, naming one case (its id only) and
    when it stops working ([followup] resources_link_valid_days from now)."""
    until = ctx.now() + timedelta(days=ctx.program.followup.resources_link_valid_days)
    token = URLSafeSerializer(ctx.settings["SECRET_KEY"], salt=RESOURCES_SALT).dumps(
        [case.case_id, int(until.timestamp())])
    return f"{ctx.settings['PUBLIC_BASE_URL'].rstrip('/')}/r/{token}"


def open_resources_link(ctx: Context, token: str) -> list[Resource] | None:
    """The Resources a genuine, unexpired link shows (None otherwise). It stops when the case is
    withdrawn or purged; an opening is an Event."""
    try:
        case_id, until = URLSafeSerializer(ctx.settings["SECRET_KEY"], salt=RESOURCES_SALT).loads(token)
        expired = datetime.fromtimestamp(int(until), timezone.utc) <= ctx.now()
    except (BadSignature, TypeError, ValueError):
        log.warning("resources link refused: not genuine")
        return None
    case = ctx.store.find_case(case_id=str(case_id))
    if case is None:
        return None
    if expired or case.status == "Withdrawn" or case.purged_at is not None or not case.tier3_referral:
        ctx.store.add_events([Event(case.case_id, "Resources link opened after it stopped working", at=ctx.now(),
                                    actor="requester")])
        return None
    by_id = {r.record_id: r for r in ctx.store.resources()}
    ctx.store.add_events([Event(case.case_id, "Resources link opened", at=ctx.now(), actor="requester")])
    return [by_id[i] for i in link_ids(case.tier3_referral) if i in by_id]


# ---------------------------------------------------------------------------- closing, withdrawing

def withdraw(ctx: Context, case_id: str, reason: str, *, actor: str) -> Case:
    """Withdrawn for a reason of WITHDRAW_REASONS: offers and links end at once (offers.withdraw)."""
    if reason not in WITHDRAW_REASONS:
        raise ValueError(f"unknown reason {reason!r}: one of {', '.join(WITHDRAW_REASONS)}")
    case = ctx.store.find_case(case_id=case_id)
    if case is not None and reason == "colleague-declined" and case.for_whom != "Colleague":
        raise ValueError(f"{case_id} was not asked for by a colleague: choose another reason")
    return offers.withdraw(ctx, case_id, actor=actor, reason=WITHDRAW_REASONS[reason])


def close_due(ctx: Context) -> int:
    """The periodic job `auto_close`: every Contacted or Referred case whose contact was made
    `[followup] close_after_days` ago or more, with no open offer, is Closed (once: a closed
    case is not closed again). Returns how many closed now."""
    run = watch.clock_start(ctx, "auto_close")
    if run is None:
        return 0
    days = ctx.program.followup.close_after_days
    due_before = run.started - timedelta(days=days)
    closed = 0
    cases = [*ctx.store.list_cases("Contacted"), *ctx.store.list_cases("Referred")]
    # A case left open (an offer open, or an error) comes back at once; the others when due.
    watch.clock_read(ctx, run, [m for case in cases for m in close_moments(ctx, case)])
    for case in cases:
        if case.contact_made_at is None or case.contact_made_at > due_before:
            continue
        if any(o.status == "open" for o in ctx.db.offers_for_case(case.case_id)):
            continue
        try:
            offers.close(ctx, case.case_id, actor="peerline",
                         event=f"Closed automatically, {days:g} days after contact")
            closed += 1
        except Exception as exc:
            log.error("auto close failed case=%s error=%s", case.case_id, describe_error(exc))
    return closed


def close_moments(ctx: Context, case: Case) -> list:
    """When `close_due` has something to do for this case (workflows/watch.py)."""
    if case.status not in ("Contacted", "Referred") or case.contact_made_at is None:
        return []
    return [case.contact_made_at + timedelta(days=ctx.program.followup.close_after_days)]


def poll(ctx: Context, *, nudged: bool = False) -> int:
    """The store-changes poll (the jobs `poll_approvals`, every minute, and
    `poll_approvals_now`, queued by an Airtable ping: `nudged`): what a coordinator did in the
    case store itself (Airtable) is carried out, each once: Status Approved (the case is
    offered, workflows/offers.py), Status Closed (Closed At set, an open offer withdrawn),
    Status Withdrawn (an open offer withdrawn), a Closed or Withdrawn case set open again
    (Reopened: `_reopened`), Assigned Supporter changed by hand on a case a supporter holds
    (it counts for them: `_given_by_hand`), Tier 3 Referral set (Referred, and the
    requester's link sent). One read of the cases changed since the last one; the periodic
    run reads only when workflows/watch.py says it is due. Returns how many steps it took."""
    if not nudged and not watch.poll_due(ctx):
        return 0
    try:
        # One read at a time; a ping's poll waits for a running one (it may have read too early).
        with ctx.db.lock("store-changes", ttl_seconds=600, wait_seconds=30 if nudged else 0):
            started = ctx.now()
            try:
                cases = ctx.store.cases_changed_since(watch.read_since(ctx))
            except Exception:
                watch.poll_read(ctx, started, failed=True)      # read again next minute
                raise
            steps, failed = 0, False
            for case in cases:
                try:
                    steps += _carry_out(ctx, case)
                except Exception as exc:
                    failed = True
                    log.error("store-changes poll failed case=%s error=%s", case.case_id, describe_error(exc))
            watch.note_changed(ctx, cases, {"review_clock": deadlines.moments, "auto_close": close_moments,
                                            "checkin": wellbeing.moments, "survey": surveys.moments})
            watch.poll_read(ctx, started, failed=failed)
            return steps
    except TimeoutError:
        log.info("store-changes poll already running elsewhere; skipped")
        return 0


def _carry_out(ctx: Context, case: Case) -> int:
    steps = _reopened(ctx, case) + _given_by_hand(ctx, case)
    if case.status == "Approved":
        return steps + (1 if offers.start_approved(ctx, case.case_id) else 0)
    return steps + _notice(ctx, case)


def _reopened(ctx: Context, case: Case) -> int:
    """A coordinator set a Closed or Withdrawn case back to an open status: it counts for its
    supporter again (matching's fair load counts open cases from our own records), and closing
    it again is carried out again. The case is read again under its lock: a poll's read may
    predate a close made since."""
    if case.status not in OPEN_STATUSES or not any(ctx.db.milestone_done(case.case_id, name) for name in ENDED):
        return 0
    with offers.case_lock(ctx, case.case_id):
        now = ctx.store.find_case(case_id=case.case_id)
        if now is None or now.status not in OPEN_STATUSES or not ctx.db.milestone_undo(case.case_id, ENDED):
            return 0
        if now.closed_at is not None:
            ctx.store.update_case(case.case_id, closed_at=None)
        ctx.store.add_events([Event(case.case_id, f"Reopened (Status set to {now.status})", at=ctx.now(),
                                    actor="coordinator")])
    log.info("case reopened case=%s status=%s", case.case_id, now.status)
    return 1


def _given_by_hand(ctx: Context, case: Case) -> int:
    """A coordinator named one supporter in Assigned Supporter of a case a supporter holds
    (Assigned, Contacted, Referred) who does not hold it in our records (another supporter's
    offer, an open offer, or none): nobody is asked by SMS, but the case counts for the one
    she named (matching's fair load and Max Open Cases), not for the one before; an open offer
    still waiting is withdrawn. Read again under the case's lock, like `_reopened`. Several
    supporters in the field: left as it is (whose case it is, is hers to say)."""
    if case.status not in REFERRABLE or len(link_ids(case.assigned_supporter)) != 1 \
            or _holds(ctx, case.case_id, case.assigned_supporter):
        return 0
    with offers.case_lock(ctx, case.case_id):
        now = ctx.store.find_case(case_id=case.case_id)
        if now is None or now.status not in REFERRABLE or len(link_ids(now.assigned_supporter)) != 1 \
                or _holds(ctx, now.case_id, now.assigned_supporter):
            return 0
        named = offers.supporter_by_id(ctx, now.assigned_supporter)
        name = named.name if named else "a supporter"
        waiting = offers.open_offer(ctx, now.case_id)
        if waiting is not None:
            offers.withdraw_offer(ctx, waiting, f"a coordinator gave the case to {name} by hand")
        if ctx.db.offer_by_hand(case_id=now.case_id, supporter_id=now.assigned_supporter, at=ctx.now()) is None:
            return 0
        ctx.store.add_events([Event(now.case_id, f"Assigned Supporter set by hand to {name}: the case counts for "
                                    "them now (nobody was asked by SMS)", at=ctx.now(), actor="coordinator")])
    log.info("case given by hand case=%s supporter=%s", now.case_id, now.assigned_supporter)
    return 1


def _holds(ctx: Context, case_id: str, supporter_id: str) -> bool:
    """Whether our records give the case to this supporter: its latest offers row is theirs,
    accepted or given by hand."""
    held = ctx.db.offers_for_case(case_id)
    return bool(held) and held[-1].supporter_id == supporter_id and held[-1].status in TAKEN


def _notice(ctx: Context, case: Case) -> int:
    if case.status == "Closed" and case.closed_at is None:
        with offers.case_lock(ctx, case.case_id):
            current = offers.open_offer(ctx, case.case_id)
            if current is not None:
                offers.withdraw_offer(ctx, current, "the case was closed")
            ctx.store.update_case(case.case_id, closed_at=ctx.now(), offer_expires=None)
            if ctx.db.milestone_mark(case.case_id, "closed", ctx.now()):
                ctx.store.add_events([Event(case.case_id, "Closed (Status set to Closed)", at=ctx.now(),
                                            actor="coordinator")])
        return 1
    if case.status == "Withdrawn" and not ctx.db.milestone_done(case.case_id, "withdrawn"):
        with offers.case_lock(ctx, case.case_id):
            current = offers.open_offer(ctx, case.case_id)
            if current is not None:
                offers.withdraw_offer(ctx, current, "the request was withdrawn")
            if ctx.db.milestone_mark(case.case_id, "withdrawn", ctx.now()):
                ctx.store.add_events([Event(case.case_id, "Withdrawn (Status set to Withdrawn)", at=ctx.now(),
                                            actor="coordinator")])
        return 1
    if case.tier3_referral and case.status in REFERRABLE \
            and not ctx.db.milestone_done(case.case_id, _referral_kind(case)):
        if case.status != "Referred":
            case = ctx.store.update_case(case.case_id, status="Referred")
        names = {r.record_id: r.name for r in ctx.store.resources()}
        offers.event_once(ctx, case.case_id, f"seen-{_referral_kind(case)}", "Referral seen (Tier 3 Referral set) to "
                           + ", ".join(names.get(i, "a resource no longer listed") for i in link_ids(case.tier3_referral)))
        send_referral(ctx, case)
        return 1
    return 0
