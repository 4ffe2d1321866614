"""Messages to people, sent exactly once, with texts from config/messages.toml.

The ledger (integrations.database `messages`) is keyed by case, kind and recipient. The intent
is recorded before the provider is called, together with the template's name and values, so
that any worker can send it later: one worker claims the send, and a rerun after a crash asks
the provider whether the message already went before sending it again.

What happens to a message (its Status in the Messages table):
- pending → sending → sent → (delivered | read | undelivered | bounced | dropped | deferred),
  from the providers' delivery reports; a report never moves a message backwards.
- held: a routine SMS during quiet hours (program.toml [quiet_hours]) waits for their end;
  crisis messages never wait.
- retry: the provider could not take it now (timeout, 5xx, 429); tried again with backoff by
  the periodic task (`run_due`), then failed after RETRY_MAX_ATTEMPTS.
- failed: the provider refused it for good (invalid number, opted out, SendGrid 400). A
  program lead is told by email, once, that a person could not be reached.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import datetime, timedelta, timezone

from config.messages import ALLOWED_PLACEHOLDERS, Template, TemplateError  # noqa: F401 (re-exported)
from config.messages import load as load_templates  # noqa: F401 (re-exported)
from workflows import phones
from workflows.model import MessageRecord
from workflows.records import InboxRow, LedgerRow

if TYPE_CHECKING:
    from config.program import Program
    from workflows.context import Context

log = logging.getLogger("peerline.notify")

#: Statuses before the provider has the message.
UNSENT = ("pending", "held", "retry", "sending")
#: How far a message has got; delivery reports only move it forward.
STATUS_RANK = {"sent": 1, "deferred": 2, "delivered": 3, "undelivered": 3, "failed": 3,
               "bounced": 3, "dropped": 3, "read": 4}
#: Final statuses meaning the person was not reached: a program lead is told.
UNREACHED = ("failed", "undelivered", "bounced", "dropped")
#: The kind of the message telling program leads that a person could not be reached.
UNREACHABLE_KIND = "unreachable"


class MessageInFlight(RuntimeError):
    """Another worker is sending this message (or died doing so); retry later."""


class SendFailed(Exception):
    """A provider did not take a message. `code` is ids only (e.g. "Twilio 21610",
    "HTTP 503", "timeout"): it is stored as the message's Error and logged.
    `permanent`: retrying cannot help. `opted_out`: the person asked to stop."""

    def __init__(self, code: str, *, permanent: bool, opted_out: bool = False):
        super().__init__(code)
        self.code, self.permanent, self.opted_out = code, permanent, opted_out


def show_time(ctx: Context, when) -> str:
    """A deadline as people read it: in the program's time zone."""
    return when.astimezone(ctx.program.program.tz).strftime("%a %d %b %H:%M %Z")


def text(ctx: Context, template: str, **values) -> str:
    """A template's body filled in, for a direct reply (an SMS answered in TwiML)."""
    return ctx.templates[template].render(_base_values(ctx) | values)[1]


def _base_values(ctx: Context) -> dict:
    return {"program": ctx.program.program.name, "crisis_resources": crisis_resources(ctx.program)}


def crisis_resources(program: Program) -> str:
    """The program's crisis text (program.toml [crisis]) as one paragraph."""
    crisis = program.crisis
    parts = [crisis.emergency, crisis.national]
    for r in crisis.resources:
        hours = f" ({r.hours})" if r.hours else ""
        parts.append(f"{r.name}: {r.phone}{hours}.")
    return " ".join(p.strip() for p in parts if p and p.strip())


def quiet_until(program: Program, now: datetime) -> datetime | None:
    """When quiet hours end, if `now` is inside them (program.toml [quiet_hours], read in the
    program's time zone); None outside them."""
    if program.quiet_hours.window is None:
        return None
    start, end = program.quiet_hours.window
    tz = program.program.tz
    local = now.astimezone(tz)
    t = local.time().replace(tzinfo=None)
    inside = (start <= t < end) if start < end else (t >= start or t < end) if start != end else False
    if not inside:
        return None
    day = local.date() if t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz).astimezone(timezone.utc)


def sms_held_until(ctx: Context, *, crisis: bool = False, now: datetime | None = None) -> datetime | None:
    """When a routine SMS sent now would go out, if quiet hours hold it; None when it goes at
    once. Crisis messages never wait, and only a provider that reaches phones keeps quiet hours
    (the embedded outbox is read by people at a desk)."""
    if crisis or not getattr(ctx.senders.get("sms"), "reaches_phones", False):
        return None
    return quiet_until(ctx.program, now or ctx.now())


@dataclass
class Recipient:
    key: str          # stable id for the ledger key, e.g. "reviewer:rec123"
    role: str         # Reviewer, Program lead, Supporter, Requester
    phone: str = ""
    email: str = ""


def message_key(case_id: str, kind: str, recipient_key: str, channel: str) -> str:
    return f"{case_id}:{kind}:{recipient_key}:{channel}"


@dataclass
class Outgoing:
    """One message for `send_all`: the arguments of `send`."""
    case_id: str
    kind: str
    template: str
    recipient: Recipient
    values: dict
    crisis: bool = False


@dataclass
class _Prepared:
    message: Outgoing
    key: str
    channel: str
    address: str
    record: MessageRecord
    kept: dict


def send(ctx: Context, *, case_id: str, kind: str, template: str, recipient: Recipient, values: dict,
         crisis: bool = False) -> str:
    """Send one message at most once. Returns the ledger status after the attempt: "sent",
    "held" (quiet hours), "retry" (the provider could not take it now), "failed", or a
    delivery status when it went earlier. `crisis`: ignore quiet hours, retry sooner."""
    return send_all(ctx, [Outgoing(case_id, kind, template, recipient, values, crisis)])[0]


def send_all(ctx: Context, messages: list[Outgoing]) -> list[str]:
    """`send` for each message (every template checked before any intent); their statuses in
    order. Inside a unit of work, the messages for a sender whose messages are rows of this
    database (the embedded outbox) go out together, one statement per step (`_send_in_unit`)."""
    prepared = [_prepare(ctx, m) for m in messages]
    if ctx.db.in_unit_of_work():
        return _send_in_unit(ctx, prepared)
    statuses = []
    for p in prepared:
        if not p.address:
            statuses.append(_no_address(ctx, p))
            continue
        new = ctx.db.ledger_intend(p.record, p.address, template=p.message.template, values=p.kept,
                                   crisis=p.message.crisis, now=ctx.now())
        statuses.append(deliver(ctx, p.key, new))
    return statuses


def _prepare(ctx: Context, m: Outgoing) -> _Prepared:
    tmpl = ctx.templates[m.template]
    address = m.recipient.phone if tmpl.channel == "sms" else m.recipient.email
    key = message_key(m.case_id, m.kind, m.recipient.key, tmpl.channel)
    record = MessageRecord(key=key, case_id=m.case_id, kind=m.kind, channel=tmpl.channel,
                           recipient_role=m.recipient.role)
    missing = tmpl.fields - set(m.values) - {"program", "crisis_resources"}
    if missing:
        raise TemplateError(f"[{m.template}] needs values for {', '.join(sorted(missing))}")
    kept = {k: v for k, v in m.values.items() if k in tmpl.fields}
    return _Prepared(m, key, tmpl.channel, address, record, kept)


def _no_address(ctx: Context, p: _Prepared) -> str:
    # Nobody to tell: the roster or the form lacks the address; the Messages row shows it.
    ctx.db.ledger_intend(p.record, "", template=p.message.template, values=p.kept, crisis=p.message.crisis,
                         now=ctx.now())
    ctx.db.ledger_advance(p.key, "failed", ("pending",), error=f"no {p.channel} address on file", alerted=True)
    _mirror(ctx, p.key)
    return ctx.db.ledger_get(p.key).status


def _send_in_unit(ctx: Context, prepared: list[_Prepared]) -> list[str]:
    """`send_all` inside a unit of work (one transaction: workflows/intake.py on the embedded
    default). The intents are one statement. A message this call recorded, for a sender whose
    messages are rows of this same database (`in_database`: the outbox), that is not opted
    out, not held and renders, is sent without a claim: its outbox row and its "sent" are
    written in this transaction, which no other worker sees before it commits, and which
    commits both or neither; for all of them, one statement each. Every other message
    (already in the ledger, an outside provider, or one to refuse or hold) goes through
    `deliver` as alone."""
    now = ctx.now()
    statuses: dict[int, str] = {}
    for i, p in enumerate(prepared):
        if not p.address:
            statuses[i] = _no_address(ctx, p)
    wanted = [(i, p) for i, p in enumerate(prepared) if p.address]
    new = ctx.db.ledger_intend_all([dict(record=p.record, recipient=p.address, template=p.message.template,
                                         values=p.kept, crisis=p.message.crisis) for _, p in wanted], now=now)
    region = phones.region(ctx.program)
    addresses = {i: phones.e164(p.address, region) if p.channel == "sms" else p.address for i, p in wanted}
    quick = [(i, p) for i, p in wanted
             if p.key in new and getattr(ctx.senders[p.channel], "in_database", False)]
    opted_out = ctx.db.opted_out_among("sms", [addresses[i] for i, p in quick if p.channel == "sms"])
    outgoing: dict[int, tuple] = {}
    for i, p in quick:
        if p.channel == "sms" and (addresses[i] in opted_out
                                   or sms_held_until(ctx, crisis=p.message.crisis, now=now) is not None):
            continue
        text = _render(ctx, new[p.key])
        if isinstance(text, tuple):
            outgoing[i] = text
    by_sender: dict[int, list[int]] = {}
    for i in outgoing:
        by_sender.setdefault(id(ctx.senders[prepared[i].channel]), []).append(i)
    sent = []
    for indexes in by_sender.values():
        sender = ctx.senders[prepared[indexes[0]].channel]
        provider_ids = sender.send_all([dict(
            message_key=prepared[i].key, channel=prepared[i].channel, to=addresses[i],
            case_id=prepared[i].message.case_id, subject=outgoing[i][0], body=outgoing[i][1]) for i in indexes])
        for i in indexes:
            digest = hashlib.sha256(outgoing[i][1].encode("utf-8")).hexdigest()
            sent.append((i, provider_ids[prepared[i].key], digest))
    ctx.db.ledger_sent_now([(prepared[i].key, provider_id, digest) for i, provider_id, digest in sent], now)
    for i, provider_id, digest in sent:
        p = prepared[i]
        row = dataclasses.replace(new[p.key], status="sent", attempts=1, body_digest=digest,
                                  provider_id=provider_id, sent_at=now, error="", claimed_until=None,
                                  next_attempt_at=None)
        log.info("message sent case=%s kind=%s channel=%s role=%s", row.case_id, row.kind, row.channel,
                 row.recipient_role)
        _mirror(ctx, p.key, row)
        statuses[i] = "sent"
    for i, p in wanted:
        if i not in statuses:
            statuses[i] = deliver(ctx, p.key, new.get(p.key))
    return [statuses[i] for i in range(len(prepared))]


def deliver(ctx: Context, key: str, row: LedgerRow | None = None) -> str:
    """Hand one ledger row to its provider, at most once. Safe to call any number of times,
    from any worker: intake, the periodic task (`run_due`), a replay. `row`: the row as just
    recorded, if the caller has it (every step below is conditional on the row's state in
    the database, so a row that changed since cannot be sent twice)."""
    row = row or ctx.db.ledger_get(key)
    if row is None:
        raise KeyError(f"no message {key}")
    if row.status not in UNSENT:
        return row.status
    channel, address = row.channel, row.recipient
    if channel == "sms":   # the roster's or the form's number, in the form providers take
        address = phones.e164(address, phones.region(ctx.program))
    sender = ctx.senders[channel]
    now = ctx.now()
    if channel == "sms" and ctx.db.is_opted_out("sms", address):
        if ctx.db.ledger_advance(key, "failed", ("pending", "held", "retry"), error="opted out (STOP)"):
            log.warning("message not sent, opted out case=%s kind=%s channel=sms role=%s",
                        row.case_id, row.kind, row.recipient_role)
            _mirror(ctx, key)
            alert_unreachable(ctx, key)
        return ctx.db.ledger_get(key).status
    if channel == "sms":
        until = sms_held_until(ctx, crisis=bool(row.crisis), now=now)
        if until is not None and ctx.db.ledger_hold(key, until):
            if row.status != "held":
                log.info("message held for quiet hours case=%s kind=%s until=%s", row.case_id, row.kind,
                         until.isoformat())
                _mirror(ctx, key)
            return "held"
    text = _render(ctx, row)   # before the claim, which records the text's digest with it
    digest = hashlib.sha256(text[1].encode("utf-8")).hexdigest() if isinstance(text, tuple) else ""
    claimed = ctx.db.ledger_claim(key, claim_seconds=int(ctx.settings["INBOX_LEASE_SECONDS"]), now=now,
                                  body_digest=digest or None)
    if not claimed:
        status = ctx.db.ledger_get(key).status
        if status == "sending":
            # Another worker holds it, or died holding it: try again once its claim runs out.
            raise MessageInFlight(key)
        return status   # sent, failed for good, or held/retrying and not yet due
    row = claimed
    if isinstance(text, SendFailed):
        return _attempt_failed(ctx, row, text)
    subject, body = text
    try:
        provider_id = None
        if row.attempts > 1:   # an earlier attempt may have reached the provider: look first
            provider_id = sender.find_sent(message_key=key, channel=channel, to=address)
        if provider_id is None:
            provider_id = sender.send(message_key=key, channel=channel, to=address,
                                      case_id=row.case_id, subject=subject, body=body)
    except SendFailed as exc:
        return _attempt_failed(ctx, row, exc)
    except Exception as exc:  # a provider client's own failure: its text may quote the message
        return _attempt_failed(ctx, row, SendFailed(type(exc).__name__, permanent=False))
    # One statement: a worker killed here leaves either a claim that runs out or a sent row.
    recorded = dict(provider_id=provider_id, sent_at=now, error="", claimed_until=None, next_attempt_at=None)
    moved = ctx.db.ledger_advance(key, "sent", ("sending",), **recorded)
    if not moved:
        ctx.db.ledger_update(key, **recorded)    # a delivery report got there first
    log.info("message sent case=%s kind=%s channel=%s role=%s", row.case_id, row.kind, channel,
             row.recipient_role)
    _mirror(ctx, key)
    return "sent" if moved else ctx.db.ledger_get(key).status


def _render(ctx: Context, row: LedgerRow) -> tuple[str, str] | SendFailed:
    """(subject, text) from the message's template and the values kept with its intent, or why
    it cannot be written (permanent: the template is gone or changed since)."""
    tmpl = ctx.templates.get(row.template)
    if tmpl is None:
        return SendFailed(f"template {row.template!r} missing", permanent=True)
    try:
        return tmpl.render(_base_values(ctx) | json.loads(row.values_json or "{}"))
    except (KeyError, IndexError, ValueError) as exc:   # the template changed since the intent
        return SendFailed(f"template {row.template}: {type(exc).__name__}", permanent=True)


def _attempt_failed(ctx: Context, row: LedgerRow, exc: SendFailed) -> str:
    key, channel = row.key, row.channel
    if exc.opted_out and channel == "sms":
        ctx.db.opt_out("sms", phones.e164(row.recipient, phones.region(ctx.program)), source=exc.code,
                       now=ctx.now())
    limit = int(ctx.settings["RETRY_MAX_ATTEMPTS"])
    if exc.permanent or row.attempts >= limit:
        ctx.db.ledger_update(key, status="failed", error=exc.code, claimed_until=None, next_attempt_at=None)
        log.warning("message failed case=%s kind=%s channel=%s role=%s attempts=%s error=%s",
                    row.case_id, row.kind, channel, row.recipient_role, row.attempts, exc.code)
        _mirror(ctx, key)
        alert_unreachable(ctx, key)
        return "failed"
    delay = retry_delay(ctx, row.attempts, crisis=row.crisis)
    ctx.db.ledger_update(key, status="retry", error=exc.code, claimed_until=None,
                         next_attempt_at=ctx.now() + timedelta(seconds=delay))
    log.warning("message will retry case=%s kind=%s channel=%s attempt=%s in=%ss error=%s",
                row.case_id, row.kind, channel, row.attempts, round(delay), exc.code)
    _mirror(ctx, key)
    return "retry"


def retry_delay(ctx: Context, attempts: int, *, crisis: bool = False) -> float:
    """Exponential backoff with jitter; crisis messages retry within two minutes."""
    base = int(ctx.settings["RETRY_BASE_SECONDS"])
    delay = min(base * 2 ** max(attempts - 1, 0), 120 if crisis else 3600)
    return delay * random.uniform(1.0, 1.2)


def record_delivery(ctx: Context, key: str, status: str, error: str = "", **values) -> bool:
    """A provider's delivery report (status callback, event webhook). The furthest status
    wins: late, repeated or out-of-order reports change nothing. Returns whether it moved.
    The Messages table shows it within a minute: the periodic `run_due` mirrors the reports
    of many messages together, not one Airtable request per report."""
    rank = STATUS_RANK[status]
    allowed = UNSENT + tuple(s for s, r in STATUS_RANK.items() if r < rank)
    return ctx.db.ledger_advance(key, status, allowed, mirror_due=True, **({"error": error} if error else {}),
                                 **values)


def alert_unreachable(ctx: Context, key: str) -> None:
    """Tell the program leads by email, once per message, that its person was not reached."""
    row = ctx.db.ledger_get(key)
    if row is None or row.alerted:
        return
    if row.kind == UNREACHABLE_KIND:
        log.error("a program lead could not be told of an unreachable person case=%s", row.case_id)
        ctx.db.ledger_update(key, alerted=True)
        return
    leads = [r for r in ctx.store.reviewers() if r.program_lead]
    if not leads:
        log.error("no program lead in the roster to tell of an unreachable person case=%s", row.case_id)
    about = key[len(row.case_id) + 1:]
    values = {"ref": row.case_id.rsplit("-", 1)[-1], "recipient_role": row.recipient_role.lower(),
              "channel": "SMS" if row.channel == "sms" else "email", "link": coordinator_link(ctx, row.case_id)}
    for lead in leads:
        send(ctx, case_id=row.case_id, kind=UNREACHABLE_KIND, template="unreachable_lead_email",
             recipient=Recipient(key=f"lead:{lead.record_id}/{about}", role="Program lead", email=lead.email),
             values=values, crisis=bool(row.crisis))
    ctx.db.ledger_update(key, alerted=True)


def reviewers_for(ctx: Context, institution: str) -> list:
    """The institution's reviewers and every program lead, each once."""
    chosen = [r for r in ctx.store.reviewers()
              if r.program_lead or (institution and r.institution == institution)]
    return list({r.record_id: r for r in chosen}.values())


def coordinator_link(ctx: Context, case_id: str = "") -> str:
    """Where a reviewer opens the case: the program's own `coordinator_url`, else the Airtable
    base, else the signed-in console's page of that case (an id in the URL, nothing more)."""
    configured = ctx.program.program.coordinator_url
    if configured:
        return configured
    if ctx.settings.get("AIRTABLE_BASE_ID"):
        return f"https://airtable.com/{ctx.settings['AIRTABLE_BASE_ID']}"
    console = f"{ctx.settings['PUBLIC_BASE_URL'].rstrip('/')}/console"
    return f"{console}/cases/{case_id}" if case_id else console


#: The email telling the program leads that a form system refused our API token, by source.
FORM_REFUSED_TEMPLATES = {"qualtrics": "qualtrics_token_refused_email", "redcap": "redcap_token_refused_email"}


def tell_leads_form_refused(ctx: Context, row: InboxRow, source: str) -> None:
    """A form system (`source`, e.g. "qualtrics") refused our API token for inbox `row`: the
    program leads are emailed once per submission, with the text for that system."""
    template = FORM_REFUSED_TEMPLATES.get(source)
    if template is None:
        log.error("no message for a refused token of source=%s inbox=%s", source, row.id)
        return
    alert_leads_parked(ctx, row, template=template, kind=f"{source}_token")


def tell_leads_duplicate_rows(ctx: Context, row: InboxRow, exc) -> None:
    """The case store has several rows for inbox `row`'s Source Response ID (`exc` is a
    workflows.errors.DuplicateRows): the leads are told which Case IDs to merge, once."""
    alert_leads_parked(ctx, row, template="duplicate_rows_email", kind="duplicate_rows",
                       values={"case_ids": ", ".join(exc.case_ids) or "(blank)",
                               "source_response_id": exc.key})


def alert_leads_parked(ctx: Context, row: InboxRow, *, template: str, kind: str,
                       values: dict | None = None) -> None:
    """Email the program leads once per parked submission (e.g. a form system refused our
    token): the key holds the inbox id, so retries and replays send nothing more. Never stops
    the parking."""
    try:
        leads = [r for r in ctx.store.reviewers() if r.program_lead]
        for lead in leads:
            send(ctx, case_id="", kind=kind, template=template,
                 recipient=Recipient(key=f"lead:{lead.record_id}/inbox-{row.id}", role="Program lead",
                                     email=lead.email),
                 values={"ref": str(row.id), **(values or {})})
        if not leads:
            log.error("no program lead to tell of a parked submission inbox=%s", row.id)
    except Exception:
        log.exception("could not email the program leads inbox=%s", row.id)


def run_due(ctx: Context) -> int:
    """The periodic task's work: send what is due (held past quiet hours, retries, sends a
    dead worker left), tell leads of messages that failed, and catch up the Messages mirror.
    Returns how many messages it tried to send."""
    keys = ctx.db.ledger_due(ctx.now())
    for key in keys:
        try:
            deliver(ctx, key)
        except MessageInFlight:
            pass
        except Exception as exc:  # one bad row must not stop the others
            log.error("message delivery failed key=%s error=%s", key, type(exc).__name__)
    for row in ctx.db.ledger_not_alerted(UNREACHED):
        alert_unreachable(ctx, row.key)
    _mirror_rows(ctx, ctx.db.ledger_mirror_due())
    return len(keys)


#: The rows to mirror when the innermost `mirror_batch` ends, by key (None: read it then; None
#: for the whole: mirror at once).
_batch: ContextVar[dict[str, LedgerRow | None] | None] = ContextVar("peerline_mirror_batch", default=None)


@contextmanager
def mirror_batch(ctx: Context):
    """Messages sent inside are shown in the Messages table together when it ends, in one
    write (Airtable takes 10 records a request) rather than one each: intake tells several
    reviewers of a case at once. Each row is shown as it is by then."""
    rows: dict[str, LedgerRow | None] = {}
    token = _batch.set(rows)
    try:
        yield
    finally:
        _batch.reset(token)
        _mirror_rows(ctx, list(rows), {key: row for key, row in rows.items() if row is not None})


def _mirror(ctx: Context, key: str, row: LedgerRow | None = None) -> None:
    """Show the ledger row in the Messages table (at the end of the current `mirror_batch`).
    `row`: the row as it is now, when nothing else can change it before it is shown (a
    message sent inside this unit of work); else it is read when shown."""
    batch = _batch.get()
    if batch is not None:
        batch[key] = row
    else:
        _mirror_rows(ctx, [key], {key: row} if row is not None else {})


def _mirror_rows(ctx: Context, keys: list[str], known: dict[str, LedgerRow] | None = None) -> None:
    """Show ledger rows in the Messages table; a store that is down is caught up later.
    `known`: rows as they are now, by key, not read again."""
    known = known or {}
    rows = [row for row in (known.get(key) or ctx.db.ledger_get(key) for key in keys) if row is not None]
    if not rows:
        return
    try:
        ctx.store.mirror_messages([MessageRecord(
            key=row.key, case_id=row.case_id, kind=row.kind, channel=row.channel,
            recipient_role=row.recipient_role, status=row.status, provider_id=row.provider_id,
            sent_at=row.sent_at, error=row.error) for row in rows])
    except Exception as exc:
        log.warning("messages mirror failed rows=%s error=%s; will retry", len(rows), type(exc).__name__)
        for row in rows:
            ctx.db.ledger_update(row.key, mirror_due=True)
        return
    for row in rows:
        if row.mirror_due:
            ctx.db.ledger_update(row.key, mirror_due=False)
