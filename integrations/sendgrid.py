"""SendGrid: email out through the v3 mail API, and delivery events from the signed Event Webhook.

Connect (README "SendGrid"):
1. Set SENDGRID_API_KEY (a key with Mail Send permission) and SENDGRID_FROM_EMAIL (a verified
   sender or an address on an authenticated domain) in `.env`; email then goes through
   SendGrid instead of the outbox. SENDGRID_API_URL (default https://api.sendgrid.com; EU
   subusers https://api.eu.sendgrid.com) points elsewhere for a test fake.
2. In SendGrid, Settings > Mail Settings > Event Webhooks: Post URL =
   PUBLIC_BASE_URL/webhooks/sendgrid/events, tick Delivered, Deferred, Bounced and Dropped
   (Processed too, it helps after a crash), turn on "Signed Event Webhook", and copy the
   verification key shown there into SENDGRID_WEBHOOK_PUBLIC_KEY.

Route: POST /webhooks/sendgrid/events, authenticated by the ECDSA signature over timestamp +
raw body (X-Twilio-Email-Event-Webhook-Signature / -Timestamp); a timestamp more than five
minutes away from our clock is refused; events are deduplicated on sg_event_id.

What SendGrid keeps of ours: the ledger key in a custom arg (case id, kind, recipient id) and
the categories "peerline" and the message kind. No name, address or text: SendGrid treats
categories and custom args as non-personal and keeps them for good. Open and click tracking
are off, so no pixel or rewritten link follows a reader.
"""
from __future__ import annotations

import binascii
import logging
import re
from datetime import timedelta
from typing import TYPE_CHECKING

import requests
from flask import Blueprint, jsonify, request
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import (Category, ClickTracking, CustomArg, Mail, OpenTracking,
                                   SubscriptionTracking, TrackingSettings)

from integrations._webhooks import MalformedPayload, SignatureError, Webhook, parse_json
from workflows import notify

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.sendgrid")

bp = Blueprint("sendgrid", __name__)

EVENTS_PATH = "/webhooks/sendgrid/events"
MAIL_SEND_PATH = "/v3/mail/send"
ERASE_PATH = "/v3/recipients/erasejob"
#: The Recipients' Data Erasure API takes at most 5,000 addresses (and 256 KB) a request.
ERASE_BATCH = 5000
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: Signed timestamps further than this from our clock are refused (replays).
TIMESTAMP_TOLERANCE = timedelta(minutes=5)
#: Our custom arg: the message's ledger key.
KEY_ARG = "peerline_key"
#: SendGrid event -> our Status.
DELIVERY_STATUS = {"delivered": "delivered", "deferred": "deferred", "bounce": "bounced", "dropped": "dropped"}


# ---------------------------------------------------------------------------- sending

class SendGridSender:
    """Sends plain-text email through POST /v3/mail/send: the body is built with the sendgrid
    library's `Mail` helpers and posted with `requests`, so one HTTP stack (and in tests the
    `responses` mock that blocks every outside call) covers SendGrid too."""

    def __init__(self, *, api_key: str, from_email: str, api_url: str, timeout: float, db,
                 session: requests.Session | None = None):
        self.url = api_url.rstrip("/") + MAIL_SEND_PATH
        self.erase_url = api_url.rstrip("/") + ERASE_PATH
        self.headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self.timeout = timeout
        self.session = session or requests.Session()
        self.from_email = from_email
        self.db = db

    @classmethod
    def from_settings(cls, values: dict, db, session: requests.Session | None = None) -> "SendGridSender":
        return cls(api_key=values["SENDGRID_API_KEY"], from_email=values["SENDGRID_FROM_EMAIL"],
                   api_url=values["SENDGRID_API_URL"], timeout=float(values["OUTSIDE_TIMEOUT_SECONDS"]),
                   db=db, session=session)

    def mail(self, *, message_key, to, subject, body) -> Mail:
        mail = Mail(from_email=self.from_email, to_emails=to, subject=subject, plain_text_content=body)
        kind = message_key.split(":")[1] if message_key.count(":") >= 3 else "message"
        mail.category = [Category("peerline"), Category(kind)]
        # On the personalization: SendGrid's spec types it as an object there (the top-level
        # field is typed as a string); events carry it back the same either way.
        mail.custom_arg = CustomArg(KEY_ARG, message_key, p=0)
        mail.tracking_settings = TrackingSettings(
            click_tracking=ClickTracking(False, False), open_tracking=OpenTracking(False),
            subscription_tracking=SubscriptionTracking(False))
        return mail

    def send(self, *, message_key, channel, to, case_id, subject, body) -> str:
        payload = self.mail(message_key=message_key, to=to, subject=subject, body=body).get()
        try:
            answer = self.session.post(self.url, json=payload, headers=self.headers, timeout=self.timeout,
                                       allow_redirects=False)
        except requests.Timeout:
            raise notify.SendFailed("SendGrid timeout", permanent=False) from None
        except (requests.RequestException, OSError) as exc:
            raise notify.SendFailed(f"SendGrid {type(exc).__name__}", permanent=False) from None
        if answer.status_code >= 400:
            raise classify(answer.status_code)
        return answer.headers.get("X-Message-Id") or f"sendgrid:{answer.status_code}"

    def find_sent(self, *, message_key, channel, to) -> str | None:
        """SendGrid's send has no idempotency key and no lookup without the paid Email
        Activity API. Its events carry our key back, and the event webhook stores the
        message id on the ledger row: a send that reached SendGrid before we could record
        it is found once any event (processed, delivered...) for it came in."""
        row = self.db.ledger_get(message_key)
        return (row.provider_id or None) if row else None

    def erase_recipients(self, addresses: list[str]) -> list[str]:
        """The purge: ask SendGrid to erase the personal data it holds for these recipients
        (POST /v3/recipients/erasejob, batches of at most 5,000). Returns the job ids; raises
        notify.SendFailed (with a status code only) when SendGrid does not accept a batch.
        Older accounts need the `recipients.erasejob.create` scope on the key."""
        jobs = []
        for start in range(0, len(addresses), ERASE_BATCH):
            batch = addresses[start:start + ERASE_BATCH]
            try:
                answer = self.session.post(self.erase_url, json={"email_addresses": batch}, headers=self.headers,
                                           timeout=self.timeout, allow_redirects=False)
            except (requests.RequestException, OSError) as exc:
                raise notify.SendFailed(f"SendGrid {type(exc).__name__}", permanent=False) from None
            if answer.status_code >= 300:
                log.warning("sendgrid erase job refused (HTTP %s)", answer.status_code)
                raise notify.SendFailed(f"SendGrid {answer.status_code}", permanent=False)
            try:
                job = str((answer.json() or {}).get("job_id") or "")
            except ValueError:
                job = ""
            jobs.append(job if re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", job) else f"accepted:{answer.status_code}")
        return jobs


def classify(status: int) -> notify.SendFailed:
    """Transient: 429, 5xx, and 401/403 (the key being fixed). Permanent: other 4xx (400:
    SendGrid refuses this message as it is, 413 too large)."""
    code = f"SendGrid {status}"
    if status == 429 or status >= 500 or status in (401, 403):
        if status in (401, 403):
            log.error("sendgrid refused our API key (HTTP %s): check SENDGRID_API_KEY and its Mail Send permission",
                      status)
        return notify.SendFailed(code, permanent=False)
    return notify.SendFailed(code, permanent=True)


# ---------------------------------------------------------------------------- event webhook

_verifiers: dict[str, EventWebhook] = {}


def verifier(public_key: str) -> EventWebhook:
    if public_key not in _verifiers:
        _verifiers[public_key] = EventWebhook(public_key)
    return _verifiers[public_key]


def signature_ok(ctx: Context, raw: bytes) -> bool:
    public_key = ctx.settings.get("SENDGRID_WEBHOOK_PUBLIC_KEY")
    signature, timestamp = request.headers.get(SIGNATURE_HEADER, ""), request.headers.get(TIMESTAMP_HEADER, "")
    if not public_key:
        log.warning("sendgrid events refused: SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        return False
    if not signature or not re.fullmatch(r"\d{1,12}", timestamp):
        return False
    try:
        signed = verifier(public_key).verify_signature(raw.decode("utf-8"), signature, timestamp)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False      # not base64, not DER, not UTF-8: not SendGrid's
    if not signed:
        return False
    age = abs(ctx.now().timestamp() - int(timestamp))
    if age > TIMESTAMP_TOLERANCE.total_seconds():
        log.warning("sendgrid events refused: signed timestamp %ss away from our clock", int(age))
        return False
    return True


#: Event fields that must be text when present (the others are read leniently: a non-text
#: sg_event_id is skipped, a non-text custom arg is not one of ours).
TEXT_FIELDS = ("event",)


class EventBatch(Webhook):
    """POST /webhooks/sendgrid/events: a signed batch of delivery events."""

    system = "sendgrid"

    def verify(self, ctx: Context, request) -> None:
        if not signature_ok(ctx, request.get_data(cache=True)):
            log.warning("sendgrid events refused: missing, wrong or stale signature")
            raise SignatureError("signature or timestamp missing, wrong or stale")

    def parse(self, ctx: Context, request) -> list[dict]:
        batch = parse_json(request.get_data(cache=True), "body")
        if not isinstance(batch, list) or not all(isinstance(e, dict) for e in batch):
            raise MalformedPayload("body", "a JSON array of event objects is expected")
        for n, event in enumerate(batch):
            for name in TEXT_FIELDS:
                if event.get(name) is not None and not isinstance(event[name], str):
                    raise MalformedPayload(f"body[{n}].{name}", "not text")
        return batch

    def dispatch(self, ctx: Context, batch: list[dict]):
        applied = duplicates = 0
        for event in batch:
            event_id = event.get("sg_event_id")
            if not isinstance(event_id, str) or not event_id:
                continue
            if not ctx.db.remember_webhook_event("sendgrid", event_id[:200], now=ctx.now()):
                duplicates += 1
                continue
            try:
                applied += apply_event(ctx, event)
            except Exception:
                ctx.db.forget_webhook_event("sendgrid", event_id[:200])   # so SendGrid's retry applies it
                raise
        log.info("sendgrid events received=%s applied=%s duplicates=%s", len(batch), applied, duplicates)
        return jsonify(received=len(batch), applied=applied, duplicates=duplicates)


EventBatch.route(bp, EVENTS_PATH, endpoint="events")


def apply_event(ctx: Context, event: dict) -> int:
    """One event onto its ledger row (found by our custom arg). Returns 1 if it changed it."""
    key = event.get(KEY_ARG)
    row = ctx.db.ledger_get(key) if isinstance(key, str) else None
    if row is None:
        return 0           # not a message of ours (the account may send other mail)
    changed = 0
    message_id = str(event.get("sg_message_id") or "").split(".", 1)[0]
    if message_id and not row.provider_id and re.fullmatch(r"[A-Za-z0-9_-]{8,100}", message_id):
        ctx.db.ledger_update(row.key, provider_id=message_id)
        changed = 1
    status = DELIVERY_STATUS.get(event.get("event"))
    if status:
        error = ""
        if status in ("bounced", "dropped"):
            smtp = str(event.get("status") or "")
            error = f"SendGrid {event['event']}" + (f" {smtp}" if re.fullmatch(r"\d\.\d{1,3}\.\d{1,3}", smtp) else "")
        changed = max(changed, int(notify.record_delivery(ctx, row.key, status, error=error)))
    return changed
