"""Twilio: SMS out through a Messaging Service, delivery reports, and supporters' replies.

Connect (README "Twilio"):
1. Set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_MESSAGING_SERVICE_SID and PUBLIC_BASE_URL
   (the https address Twilio reaches the service at) in `.env`; SMS then goes through Twilio
   instead of the outbox. TWILIO_API_URL (default https://api.twilio.com) points elsewhere
   for a sandbox or a test fake.
2. In the Twilio Console, Messaging > Services > your service > Integration: "Send a webhook",
   Request URL = PUBLIC_BASE_URL/webhooks/twilio/sms, method HTTP POST. The status callback
   needs no setting: every message we send names PUBLIC_BASE_URL/webhooks/twilio/status.
3. Test: `flask --app app sms simulate "+15550101101" "HELP"` signs and posts an SMS to our
   own webhook and prints the reply.

Routes (docs/architecture.md section 4), both authenticated by X-Twilio-Signature, validated with
twilio's RequestValidator against PUBLIC_BASE_URL + path + query (behind a TLS proxy the
URL Flask sees is not the one Twilio signed):
- POST /webhooks/twilio/sms: the text goes to workflows.sms_commands, which decides what it
  does (YES/NO/DONE 4821, HELP, STOP, START) and the reply; answered as short TwiML.
- POST /webhooks/twilio/status: a message's delivery status; the furthest one wins.
Logs carry message SIDs and statuses only, never a number or a text.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import click
import requests
from flask import Blueprint, Response, current_app, request
from flask.cli import AppGroup
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from integrations._webhooks import SignatureError, Webhook, require_fields
from workflows import notify, phones, sms_commands

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.twilio")

#: twilio-python logs each request's URL and query at INFO; ours stay out of the logs.
_http_log = logging.getLogger("peerline.twilio.http")
_http_log.setLevel(logging.WARNING)

bp = Blueprint("twilio", __name__)
cli = AppGroup("sms", help="Two-way SMS (Twilio).")

SMS_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/webhooks/twilio/status"

#: Set in the WSGI environ by `flask sms simulate` only: no HTTP request can set it.
SIMULATION_ENVIRON_KEY = "peerline.sms_simulation"

#: Twilio MessageStatus -> our Status. Earlier states (queued, accepted, sending...) add nothing.
DELIVERY_STATUS = {"sent": "sent", "delivered": "delivered", "undelivered": "undelivered",
                   "failed": "failed", "read": "read"}

OPTED_OUT = 21610


# ---------------------------------------------------------------------------- sending

class TwilioSender:
    """Sends SMS through a Messaging Service (it picks the number from its pool)."""

    #: Its messages reach phones at once, so quiet hours apply (notify.deliver).
    reaches_phones = True

    def __init__(self, *, account_sid: str, auth_token: str, messaging_service_sid: str, api_url: str,
                 status_callback: str, timeout: float, db, content_retention: str = "",
                 address_retention: str = ""):
        # Credentials are passed in, and `environment` keeps twilio from reading os.environ
        # (config/settings.py is the only reader of the environment).
        self.client = Client(account_sid, auth_token, account_sid=account_sid,
                             http_client=TwilioHttpClient(timeout=timeout, logger=_http_log),
                             environment={"PEERLINE": "settings"})
        # twilio-python has no base-URL option; the API domain keeps it as an attribute.
        self.client.api.base_url = api_url.rstrip("/")
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.db = db
        # Sent only when set (TWILIO_CONTENT_RETENTION / TWILIO_ADDRESS_RETENTION): Twilio
        # accepts them only on accounts with its privacy settings enabled.
        self.retention = {k: v for k, v in (("content_retention", content_retention),
                                             ("address_retention", address_retention)) if v}

    @classmethod
    def from_settings(cls, values: dict, db) -> "TwilioSender":
        for name, allowed in (("TWILIO_CONTENT_RETENTION", ("retain", "discard")),
                              ("TWILIO_ADDRESS_RETENTION", ("retain", "obfuscate"))):
            if values.get(name) and values[name] not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} (or unset), not {values[name]!r}")
        return cls(account_sid=values["TWILIO_ACCOUNT_SID"], auth_token=values["TWILIO_AUTH_TOKEN"],
                   messaging_service_sid=values["TWILIO_MESSAGING_SERVICE_SID"],
                   api_url=values["TWILIO_API_URL"],
                   status_callback=values["PUBLIC_BASE_URL"].rstrip("/") + STATUS_PATH,
                   timeout=float(values["OUTSIDE_TIMEOUT_SECONDS"]), db=db,
                   content_retention=values.get("TWILIO_CONTENT_RETENTION") or "",
                   address_retention=values.get("TWILIO_ADDRESS_RETENTION") or "")

    def send(self, *, message_key, channel, to, case_id, subject, body) -> str:
        try:
            message = self.client.messages.create(
                to=phones.e164(to), messaging_service_sid=self.messaging_service_sid,
                body=body, status_callback=self.status_callback, **self.retention)
        except TwilioRestException as exc:
            raise classify(exc) from None
        except requests.Timeout:
            raise notify.SendFailed("Twilio timeout", permanent=False) from None
        except requests.RequestException as exc:
            raise notify.SendFailed(f"Twilio {type(exc).__name__}", permanent=False) from None
        return message.sid

    def find_sent(self, *, message_key, channel, to) -> str | None:
        """An earlier send of this message that reached Twilio before we could record it.

        Twilio's create has no idempotency key, so we look in the account's Messages sent
        since the intent was recorded (DateSent filter) for one to the same number whose
        text has the same SHA-256 as ours. The number is compared here, not sent as the
        list's `To` filter, so no phone number ever appears in a URL we call. A message
        still queued at Twilio has no DateSent yet and is not found (it is then sent again)."""
        row = self.db.ledger_get(message_key)
        if row is None or not row.body_digest:
            return None
        since = row.created_at - timedelta(minutes=5)
        number = phones.e164(to)
        try:
            for message in self.client.messages.stream(date_sent_after=since, page_size=200, limit=1000):
                if (message.to == number and (message.direction or "").startswith("outbound")
                        and hashlib.sha256((message.body or "").encode("utf-8")).hexdigest() == row.body_digest):
                    return message.sid
        except TwilioRestException as exc:
            raise classify(exc, looking=True) from None
        except requests.RequestException as exc:
            raise notify.SendFailed(f"Twilio {type(exc).__name__}", permanent=False) from None
        return None


    def delete_messages(self, sids: list[str]) -> dict:
        """The purge: DELETE each message record (and its media) at Twilio. Returns
        {"deleted": n, "gone": n (already absent: 404), "pending": [sids]} - a message still in
        progress (Twilio refuses to delete it) or any other failure stays pending for the next
        run. Logs carry SIDs and status codes only."""
        deleted, gone, pending = 0, 0, []
        for sid in sids:
            try:
                self.client.messages(sid).delete()
                deleted += 1
            except TwilioRestException as exc:
                if exc.status == 404:
                    gone += 1
                else:
                    log.warning("twilio delete message=%s refused (HTTP %s, code %s): retried next run",
                                _sid(sid), exc.status, exc.code)
                    pending.append(sid)
            except requests.RequestException as exc:
                log.warning("twilio delete message=%s failed (%s): retried next run", _sid(sid), type(exc).__name__)
                pending.append(sid)
        return {"deleted": deleted, "gone": gone, "pending": pending}


def classify(exc: TwilioRestException, *, looking: bool = False) -> notify.SendFailed:
    """Transient (retry with backoff): 429, 5xx, and 401/403 (credentials being fixed).
    Permanent: every other 4xx (invalid number 21211, opted out 21610, not a mobile...)."""
    code = f"Twilio {exc.code}" if exc.code else f"Twilio HTTP {exc.status}"
    status = exc.status or 0
    if looking or status == 429 or status >= 500 or status in (401, 403):
        if status in (401, 403):
            log.error("twilio refused our credentials (HTTP %s): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
                      status)
        return notify.SendFailed(code, permanent=False)
    return notify.SendFailed(code, permanent=True, opted_out=exc.code == OPTED_OUT)


# ---------------------------------------------------------------------------- webhooks

def simulation_key(settings: dict) -> str:
    """The key `flask sms simulate` signs with when there is no Auth Token: derived from
    SECRET_KEY, accepted only with the simulation environ mark."""
    return hmac.new(settings["SECRET_KEY"].encode("utf-8"), b"peerline sms simulate",
                    hashlib.sha256).hexdigest()


def public_url() -> str:
    """The URL Twilio called: PUBLIC_BASE_URL + path + query, never request.url."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    query = request.query_string.decode("latin-1")
    return base + request.path + (f"?{query}" if query else "")


def signature_ok() -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    settings = current_app.extensions["peerline"].settings
    token = settings.get("TWILIO_AUTH_TOKEN")
    if not token:
        if request.environ.get(SIMULATION_ENVIRON_KEY) is not True:
            return False     # Twilio is not configured: nothing from outside can be verified
        token = simulation_key(settings)
    return RequestValidator(token).validate(public_url(), request.form, signature)


def twiml(reply: str | None = None) -> Response:
    answer = MessagingResponse()
    if reply:
        answer.message(reply)
    return Response(str(answer), mimetype="application/xml")


class TwilioWebhook(Webhook):
    """Both Twilio routes: X-Twilio-Signature checked, then form fields; answers TwiML."""

    system = "twilio"

    def verify(self, ctx: Context, request) -> None:
        if not signature_ok():
            raise SignatureError("X-Twilio-Signature missing or wrong")


class InboundSms(TwilioWebhook):
    """POST /webhooks/twilio/sms: a person's text to the program's number."""

    def parse(self, ctx: Context, request):
        require_fields(request.form, "From", "Body", allow_empty=True)   # an empty text is a text
        return request.form

    def dispatch(self, ctx: Context, form):
        command, reply = sms_commands.reply(ctx, form["From"], form["Body"], form.get("OptOutType", ""))
        log.info("twilio sms handled message=%s command=%s", _sid(form.get("MessageSid")), command)
        return twiml(reply)


class StatusCallback(TwilioWebhook):
    """POST /webhooks/twilio/status: a message's delivery status; the furthest one wins."""

    def parse(self, ctx: Context, request):
        require_fields(request.form, "MessageSid", "MessageStatus")
        return request.form

    def dispatch(self, ctx: Context, form):
        sid, status = _sid(form["MessageSid"]), form["MessageStatus"]
        row = ctx.db.ledger_by_provider_id(sid)
        moved = False
        if row and status in DELIVERY_STATUS:
            code = form.get("ErrorCode", "")
            error = f"Twilio {code}" if code and status in ("failed", "undelivered") else ""
            moved = notify.record_delivery(ctx, row.key, DELIVERY_STATUS[status], error=error)
            if code == str(OPTED_OUT):
                ctx.db.opt_out("sms", phones.e164(row.recipient, phones.region(ctx.program)), source=f"Twilio {OPTED_OUT}",
                               now=ctx.now())
        log.info("twilio status message=%s status=%s known=%s moved=%s", sid, _word(status), bool(row), moved)
        return twiml()


InboundSms.route(bp, SMS_PATH, endpoint="inbound_sms")
StatusCallback.route(bp, STATUS_PATH, endpoint="status_callback")


def _sid(value) -> str:
    """A Twilio SID as it may be logged (two letters and hex), else a placeholder."""
    value = str(value or "")
    return value if re.fullmatch(r"[A-Z]{2}[0-9a-fA-F]{32}", value) else "(not a sid)"


def _word(value) -> str:
    value = str(value or "")
    return value if re.fullmatch(r"[a-z_]{1,30}", value) else "(other)"


# ---------------------------------------------------------------------------- CLI

@cli.command("simulate")
@click.argument("phone")
@click.argument("text")
def simulate(phone, text):
    """Post an SMS from PHONE saying TEXT to our own webhook, correctly signed, and print
    the reply. Works without Twilio (signed with a key derived from SECRET_KEY)."""
    ctx = current_app.extensions["peerline"]
    if not phones.is_phone(phone, phones.region(ctx.program)):
        raise click.BadParameter(f"{phone!r} is not a phone number (like +15550101101)", param_hint="PHONE")
    form = {"ToCountry": "US", "SmsMessageSid": "", "NumMedia": "0", "SmsSid": "", "SmsStatus": "received",
            "Body": text, "From": phone, "To": "", "NumSegments": "1", "ApiVersion": "2010-04-01",
            "AccountSid": ctx.settings.get("TWILIO_ACCOUNT_SID") or "AC" + "0" * 32}
    form["MessageSid"] = form["SmsMessageSid"] = form["SmsSid"] = "SM" + uuid.uuid4().hex
    if ctx.settings.get("TWILIO_MESSAGING_SERVICE_SID"):
        form["MessagingServiceSid"] = ctx.settings["TWILIO_MESSAGING_SERVICE_SID"]
    token = ctx.settings.get("TWILIO_AUTH_TOKEN") or simulation_key(ctx.settings)
    url = ctx.settings["PUBLIC_BASE_URL"].rstrip("/") + SMS_PATH
    signature = RequestValidator(token).compute_signature(url, form)
    answer = current_app.test_client().post(SMS_PATH, data=form, headers={"X-Twilio-Signature": signature},
                                            environ_base={SIMULATION_ENVIRON_KEY: True})
    if answer.status_code != 200:
        raise click.ClickException(f"the SMS webhook answered {answer.status_code}: "
                                   f"{answer.get_data(as_text=True)[:200]}")
    replies = [m.text or "" for m in ElementTree.fromstring(answer.get_data()).iter("Message")]
    click.echo("\n".join(replies) if replies else "(no reply from Peerline: STOP and START get Twilio's own answer)")
