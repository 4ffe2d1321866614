"""The purge (docs/architecture.md section 7; README "What we keep, and for how long").

Which cases: every case Closed or Withdrawn for at least `retention_days` (program.toml), and at
once a colleague referral withdrawn because the colleague declined (its Event starts with
"Withdrawn: the colleague declined"). The moment a case ended is its Closed At; a Withdrawn case
without a Closed At ended at its last Event (or, with none, when it was submitted).

What goes, sink by sink, each through an interface the Context gives (workflows import no
integration):
- `store`: the case store's record is replaced by its de-identified fields (`KEEP`); everything
  else (names, phones, emails, referrer, department, suggested supporters) is emptied.
  `ctx.store.replace_case` (Airtable deletes the records and writes a new one: cell history).
- `database`: the inbox payload, the ledger's recipients and placeholder values, the outbox's
  recipients and texts (`ctx.db.purge_case_rows`), then `ctx.db.reclaim()` (SQLite WAL).
- `sms`: the message records at the SMS provider, when it keeps them (`delete_messages` on the
  sender: Twilio; the outbox is the database sink's).
- `email`: the recipients' data at the email provider (`erase_recipients` on the sender:
  SendGrid), only for addresses no open case still uses and that are not the roster's.

Each sink's progress is kept per case in the `purges` table: a sink that fails stays pending and
is retried on the next run; a run killed halfway is finished by the next. The receipt is an Event
naming counts per sink (and what is pending), written once; when pending sinks finish later a
second Event says so; Purged At is set on the case only when every sink is done. Nothing here
logs, prints or stores a name, number, address or text: case references, sinks and counts only.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from workflows.model import OPEN_STATUSES, Case, Event

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.purge")

#: The Event another step writes when a colleague declines a referral: purged at once.
COLLEAGUE_DECLINED = "Withdrawn: the colleague declined"
RECEIPT = "Purged:"
FINISHED = "Purge finished:"

#: The fields a purged case keeps: its reference, source, dates, status, urgency, for whom,
#: institution, role, specialty, preferences, flyer, referral kinds, assigned supporter (a
#: roster link), and Problems (fixed phrases naming a question, never an answer). Every other
#: field of `Case` is emptied.
KEEP = ("case_id", "source", "source_response_id", "submitted_at", "status", "urgency", "for_whom",
        "institution", "role", "specialty", "preferred_contact", "role_preference", "department_preference",
        "outside_my_institution", "flyer", "review_due", "assigned_supporter", "offer_expires",
        "contact_made_at", "tier3_referral", "closed_at", "survey_sent_at", "purged_at", "problems")

SINK_NAMES = {"store": "case store", "database": "database", "sms": "SMS provider", "email": "email provider"}
_PROVIDER_SID = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")


@dataclass
class Outcome:
    """One case's purge, as people and logs may see it: references, sinks and counts."""
    case_id: str
    reason: str
    removed: dict[str, int] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    receipt: str = ""


def deidentified(case: Case) -> Case:
    """The case as it stays after the purge."""
    return Case(**{name: getattr(case, name) for name in KEEP}, record_id=case.record_id)


def ended_at(ctx: Context, case: Case, events: list[Event] | None = None) -> datetime | None:
    if case.closed_at or case.status == "Closed":
        return case.closed_at
    events = ctx.store.list_events(case.case_id) if events is None else events
    return max((e.at for e in events), default=case.submitted_at)


def due(ctx: Context) -> list[tuple[Case, str]]:
    """(case, reason) for every case to purge now (reason: "retention" or "colleague declined")."""
    cutoff = ctx.now() - timedelta(days=ctx.program.program.retention_days)
    found = []
    for status in ("Closed", "Withdrawn"):
        for case in ctx.store.list_cases(status):
            if case.purged_at:
                continue
            events = ctx.store.list_events(case.case_id) if status == "Withdrawn" else []
            if any(e.event.startswith(COLLEAGUE_DECLINED) for e in events):
                found.append((case, "colleague declined"))
                continue
            ended = ended_at(ctx, case, events)
            if ended is not None and ended <= cutoff:
                found.append((case, "retention"))
    return found


def _sinks(ctx: Context) -> list[str]:
    sinks = ["store", "database"]
    if hasattr(ctx.senders.get("sms"), "delete_messages"):
        sinks.append("sms")
    if hasattr(ctx.senders.get("email"), "erase_recipients"):
        sinks.append("email")
    return sinks


def _plan(ctx: Context, case: Case, sink: str) -> dict:
    """What a sink will remove, captured before anything is removed (purge state keeps it)."""
    if sink == "store":
        return {"old": ctx.store.case_records(case.case_id)}
    rows = ctx.db.case_messages(case.case_id)
    if sink == "sms":
        return {"sids": sorted({r.provider_id for r in rows
                                if r.channel == "sms" and _PROVIDER_SID.fullmatch(r.provider_id or "")}),
                "deleted": 0}
    if sink == "email":
        staff = {p.email.lower() for p in [*ctx.store.supporters(), *ctx.store.reviewers()] if p.email}
        found = {case.requester_email, case.referrer_email, *(r.recipient for r in rows if r.channel == "email")}
        return {"addresses": sorted({a.strip().lower() for a in found if a and "@" in a} - staff)}
    return {"messages": len(rows)}


def dry_run(ctx: Context) -> list[str]:
    """What a run would remove: one line per case, by reference, sink and count."""
    lines = []
    for case, reason in due(ctx):
        state = ctx.db.purge_state(case.case_id)
        parts = []
        for sink in _sinks(ctx):
            if state.get(sink, {}).get("status") == "done":
                continue
            plan = state[sink]["detail"] if sink in state else _plan(ctx, case, sink)
            count = {"store": lambda p: len(p["old"]), "database": lambda p: p.get("messages", 0),
                     "sms": lambda p: len(p["sids"]), "email": lambda p: len(p["addresses"])}[sink](plan)
            unit = {"store": "record", "database": "message", "sms": "message", "email": "address"}[sink]
            parts.append(f"{SINK_NAMES[sink]} ({count} {unit}{'' if count == 1 else ('es' if unit == 'address' else 's')})")
        lines.append(f"{case.case_id} ({reason}): " + ", ".join(parts))
    return lines


def run(ctx: Context) -> list[Outcome]:
    """Purge every case that is due; returns what was done (references and counts only)."""
    outcomes = []
    for case, reason in due(ctx):
        try:
            outcomes.append(purge_case(ctx, case, reason))
        except Exception as exc:     # one case's trouble must not keep the others
            log.error("purge case=%s failed (%s): retried next run", case.case_id, type(exc).__name__)
            outcomes.append(Outcome(case.case_id, reason, pending=["(error: " + type(exc).__name__ + ")"]))
    ctx.db.reclaim()
    return outcomes


def purge_case(ctx: Context, case: Case, reason: str = "retention") -> Outcome:
    with ctx.db.lock(f"purge:{case.case_id}", ttl_seconds=900):
        sinks = _sinks(ctx)
        state = ctx.db.purge_state(case.case_id)
        for sink in sinks:      # every plan is taken before anything is removed
            if sink not in state:
                ctx.db.purge_begin(case.case_id, sink, _plan(ctx, case, sink), now=ctx.now())
        state = ctx.db.purge_state(case.case_id)
        for sink in sinks:
            if state[sink]["status"] != "done":
                _step(ctx, case, sink, state[sink]["detail"])
        ctx.db.reclaim()
        return _receipt(ctx, case, reason, sinks)


def _step(ctx: Context, case: Case, sink: str, plan: dict) -> None:
    cid = case.case_id
    try:
        if sink == "store":
            removed = ctx.store.replace_case(deidentified(case), plan["old"])
            ctx.db.purge_record(cid, sink, done=True, removed=removed, now=ctx.now())
        elif sink == "database":
            counts = ctx.db.purge_case_rows(cid)
            ctx.db.purge_record(cid, sink, done=True, removed=sum(counts.values()), detail=counts, now=ctx.now())
        elif sink == "sms":
            result = ctx.senders["sms"].delete_messages(plan["sids"])
            deleted = plan.get("deleted", 0) + result["deleted"] + result["gone"]
            ctx.db.purge_record(cid, sink, done=not result["pending"], removed=deleted,
                                detail={"sids": result["pending"], "deleted": deleted},
                                error=f"{len(result['pending'])} still in progress or refused" if result["pending"] else "",
                                now=ctx.now())
        elif sink == "email":
            in_use = _addresses_of_open_cases(ctx, cid)
            erase = [a for a in plan["addresses"] if a not in in_use]
            jobs = ctx.senders["email"].erase_recipients(erase) if erase else []
            # The addresses leave the purge state as soon as the provider has them.
            ctx.db.purge_record(cid, sink, done=True, removed=len(erase),
                                detail={"jobs": jobs, "in_use": len(plan["addresses"]) - len(erase)}, now=ctx.now())
    except Exception as exc:
        code = getattr(exc, "code", "") or type(exc).__name__
        log.warning("purge case=%s sink=%s pending (%s): retried next run", cid, sink, type(exc).__name__)
        ctx.db.purge_record(cid, sink, done=False, error=str(code)[:100] if re.fullmatch(r"[\w .:-]{1,100}", str(code))
                            else type(exc).__name__, now=ctx.now())


def _addresses_of_open_cases(ctx: Context, case_id: str) -> set[str]:
    open_cases = [c for c in ctx.store.list_cases() if c.status in OPEN_STATUSES and c.case_id != case_id]
    found = {a.lower() for c in open_cases for a in (c.requester_email, c.referrer_email) if a}
    return found | ctx.db.addresses_in_use([c.case_id for c in open_cases])


def _describe(state: dict, sinks: list[str]) -> str:
    parts = []
    for sink in sinks:
        row = state[sink]
        if row["status"] != "done":
            continue
        detail = row["detail"]
        if sink == "store":
            parts.append(f"case store {row['removed']}")
        elif sink == "database":
            parts.append(f"database {row['removed']} (inbox {detail.get('inbox', 0)}, ledger {detail.get('ledger', 0)}, "
                         f"outbox {detail.get('outbox', 0)})")
        elif sink == "sms":
            parts.append(f"Twilio {row['removed']} deleted")
        elif sink == "email":
            jobs = detail.get("jobs") or []
            job = f" (job {jobs[0][:40]}{f' +{len(jobs) - 1}' if len(jobs) > 1 else ''})" if jobs else ""
            parts.append(f"SendGrid {row['removed']} erased{job}")
    return ", ".join(parts) or "nothing"


def _receipt(ctx: Context, case: Case, reason: str, sinks: list[str]) -> Outcome:
    cid = case.case_id
    state = ctx.db.purge_state(cid)
    pending = [s for s in sinks if state[s]["status"] != "done"]
    outcome = Outcome(cid, reason, removed={s: state[s]["removed"] for s in sinks if s not in pending},
                      pending=[SINK_NAMES[s] for s in pending])
    events = [e.event for e in ctx.store.list_events(cid)]
    if "receipt" not in state:
        text = f"{RECEIPT} {_describe(state, sinks)}; pending: " + (", ".join(outcome.pending) or "none")
        if not any(e.startswith(RECEIPT) for e in events):
            ctx.store.add_events([Event(case_id=cid, event=text[:200], at=ctx.now())])
        ctx.db.purge_begin(cid, "receipt", {"pending": pending}, now=ctx.now())
        if not pending:
            ctx.db.purge_record(cid, "receipt", done=True, now=ctx.now())
        outcome.receipt = text[:200]
    elif state["receipt"]["status"] != "done" and not pending:
        text = f"{FINISHED} {_describe({s: state[s] for s in state['receipt']['detail']['pending']}, state['receipt']['detail']['pending'])}"
        if not any(e.startswith(FINISHED) for e in events):
            ctx.store.add_events([Event(case_id=cid, event=text[:200], at=ctx.now())])
        ctx.db.purge_record(cid, "receipt", done=True, now=ctx.now())
        outcome.receipt = text[:200]
    if not pending and not case.purged_at:
        ctx.store.update_case(cid, purged_at=ctx.now())
    log.info("purge case=%s reason=%s done=%s pending=%s", cid, reason,
             ",".join(f"{s}:{n}" for s, n in outcome.removed.items()), ",".join(pending) or "none")
    return outcome
