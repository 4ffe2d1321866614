"""Messages to people, sent exactly once, with texts from config/messages.toml.

The ledger (integrations.database `messages`) is keyed by case, kind and recipient. The intent
is recorded before the provider is called, one worker claims the send, and a rerun after a
crash asks the provider whether the message already went before sending it again.
"""
from __future__ import annotations

import logging
import string
import tomllib
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from workflows.model import MessageRecord

log = logging.getLogger("peerline.notify")

#: What each channel's templates may say (DESIGN.md section 7).
ALLOWED_PLACEHOLDERS = {
    "sms": {"ref", "deadline", "link", "program"},
    "email": {"ref", "deadline", "link", "program", "institution", "urgency", "role"},
}


class MessageInFlight(RuntimeError):
    """Another worker is sending this message (or died doing so); retry later."""


class TemplateError(ValueError):
    """A template breaks the confidentiality rules or is malformed."""


@dataclass(frozen=True)
class Template:
    name: str
    channel: str
    body: str
    subject: str = ""

    def render(self, values: dict) -> tuple[str, str]:
        return self.subject.format(**values), self.body.format(**values)


def load_templates(path) -> dict[str, Template]:
    """Read and check every template; a broken one stops the start with a clear message."""
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    templates, errors = {}, []
    for name, spec in raw.items():
        channel = spec.get("channel")
        if channel not in ALLOWED_PLACEHOLDERS:
            errors.append(f"[{name}] channel must be one of {sorted(ALLOWED_PLACEHOLDERS)}, not {channel!r}")
            continue
        if not spec.get("body"):
            errors.append(f"[{name}] has no body")
            continue
        if channel == "email" and not spec.get("subject"):
            errors.append(f"[{name}] is an email without a subject")
        for part in ("subject", "body"):
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(spec.get(part, "")) if f is not None}
            except ValueError as exc:
                errors.append(f"[{name}] {part}: {exc}")
                continue
            bad = sorted(used - ALLOWED_PLACEHOLDERS[channel])
            if bad:
                errors.append(f"[{name}] {part} uses {', '.join('{' + b + '}' for b in bad)}, "
                              f"which a {channel} may not carry (allowed: "
                              f"{', '.join(sorted(ALLOWED_PLACEHOLDERS[channel]))})")
        templates[name] = Template(name, channel, spec["body"], spec.get("subject", ""))
    if errors:
        raise TemplateError(f"{path}: " + "; ".join(errors))
    return templates


def show_time(ctx, when) -> str:
    """A deadline as people read it: in the program's time zone."""
    tz = ZoneInfo(ctx.program["program"].get("timezone", "UTC"))
    return when.astimezone(tz).strftime("%a %d %b %H:%M %Z")


@dataclass
class Recipient:
    key: str          # stable id for the ledger key, e.g. "reviewer:rec123"
    role: str         # Reviewer, Program lead, Supporter, Requester
    phone: str = ""
    email: str = ""


def send(ctx, *, case_id: str, kind: str, template: str, recipient: Recipient, values: dict) -> str:
    """Send one message at most once. Returns the ledger status after the attempt."""
    tmpl = ctx.templates[template]
    address = recipient.phone if tmpl.channel == "sms" else recipient.email
    key = f"{case_id}:{kind}:{recipient.key}:{tmpl.channel}"
    record = MessageRecord(key=key, case_id=case_id, kind=kind, channel=tmpl.channel,
                           recipient_role=recipient.role)
    if not address:
        ctx.db.ledger_intend(record, "")
        ctx.db.ledger_update(key, status="failed", error=f"no {tmpl.channel} address on file")
        _mirror(ctx, key)
        return "failed"
    ctx.db.ledger_intend(record, address)
    if not ctx.db.ledger_claim(key, claim_seconds=int(ctx.settings["INBOX_LEASE_SECONDS"])):
        status = ctx.db.ledger_get(key)["status"]
        if status == "sending":
            # Another worker holds it, or died holding it: try again once its claim runs out.
            raise MessageInFlight(key)
        return status   # already sent, or failed for good
    sender = ctx.senders[tmpl.channel]
    provider_id = sender.find_sent(message_key=key, channel=tmpl.channel, to=address)
    if provider_id is None:
        subject, body = tmpl.render({"program": ctx.program["program"]["name"], **values})
        try:
            provider_id = sender.send(message_key=key, channel=tmpl.channel, to=address,
                                      case_id=case_id, subject=subject, body=body)
        except Exception:
            ctx.db.ledger_update(key, status="pending", claimed_until=None)
            raise
    ctx.db.ledger_update(key, status="sent", provider_id=provider_id, sent_at=ctx.now(), error="")
    log.info("message sent case=%s kind=%s channel=%s role=%s", case_id, kind, tmpl.channel, recipient.role)
    _mirror(ctx, key)
    return "sent"


def _mirror(ctx, key: str) -> None:
    row = ctx.db.ledger_get(key)
    ctx.store.mirror_messages([MessageRecord(
        key=row["key"], case_id=row["case_id"], kind=row["kind"], channel=row["channel"],
        recipient_role=row["recipient_role"], status=row["status"], provider_id=row["provider_id"],
        sent_at=row["sent_at"], error=row["error"])])
