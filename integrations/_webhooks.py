"""One skeleton for every inbound webhook: verify -> parse -> dispatch, and one error handler.

Shared plumbing, not an outside system, so every integration may import it (as Zulip's
`webhook_view` and `WebhookError` serve all its integrations; docs/architecture.md section 4).
An integration fills a small `Webhook` class and routes it on its blueprint:

    class Notice(Webhook):
        system = "qualtrics"
        def verify(self, ctx: Context, request): require_token(ctx.settings.get("..."), "Qualtrics")
        def parse(self, ctx: Context, request): ... return event, or Ignored("why"), or raise MalformedPayload
        def dispatch(self, ctx: Context, event): ... return the answer

    Notice.route(bp, "/qualtrics")

Every failure is a `WebhookError` raised from one of the three steps, and `init_app(app)`
registers the one handler that turns it into an answer (JSON, never a payload value):

    NotConfigured 404 · SignatureError 403 · Refused 403 · MalformedPayload(field) 400 naming
    the field · PayloadTooLarge 413 · Unavailable 503 with Retry-After

A body over MAX_CONTENT_LENGTH (with or without Content-Length) becomes PayloadTooLarge, and a
database we cannot reach (SQLAlchemy's OperationalError or pool timeout, in any step) becomes
Unavailable, so the sender retries later. The web process only verifies, records the notice in
the inbox and queues it (workflows/inbox.py); the inbox row is the truth. Logs name the system,
the route and our own error text only: never a payload value.
"""
from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import current_app, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import RequestEntityTooLarge

from integrations._metrics import count_signature_failure, count_webhook
from workflows.inbox import record_and_enqueue

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.webhooks")

#: Every webhook route is under this path (docs/architecture.md section 4).
WEBHOOKS_PATH = "/webhooks/"

#: What a sender is told to wait before retrying when our database is out of reach.
RETRY_AFTER_SECONDS = 60


# ---------------------------------------------------------------------------- errors

class WebhookError(Exception):
    """A webhook request we answer with `status` and {"error": message[, "field": field]}."""

    status = 500

    def __init__(self, message: str, *, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message, self.field, self.headers = message, field, dict(headers or {})

    def body(self) -> dict:
        return {"error": self.message, **({"field": self.field} if self.field else {})}


class NotConfigured(WebhookError):
    """This system is not set up on this server (its secret is not set)."""
    status = 404

    def __init__(self, system: str):
        super().__init__(f"{system} is not configured on this server")


class SignatureError(WebhookError):
    """Missing or wrong signature or token: we cannot tell the sender is who it says."""
    status = 403


class Refused(WebhookError):
    """Authenticated, but not for us (another survey, another project)."""
    status = 403


class MalformedPayload(WebhookError):
    """400 naming the field: `MalformedPayload("ResponseID", "missing")`."""
    status = 400

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}", field=field)


class PayloadTooLarge(WebhookError):
    status = 413

    def __init__(self, message: str = "request body too large"):
        super().__init__(message)


class Unavailable(WebhookError):
    """We cannot take the notice now (the database is out of reach): retry later."""
    status = 503

    def __init__(self, message: str = "temporarily unavailable; please retry",
                 retry_after: int = RETRY_AFTER_SECONDS):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Ignored:
    """What `parse` returns for an event we deliberately do not act on (answered 200)."""

    def __init__(self, why: str):
        self.why = why


#: Database failures that mean "out of reach", not "a bug": the connection was refused or
#: dropped, or no pooled connection came free in time.
UNREACHABLE = (sa.exc.OperationalError, sa.exc.TimeoutError)


# ---------------------------------------------------------------------------- the skeleton

class Webhook:
    """One webhook route: `verify`, then `parse`, then `dispatch`. Subclasses set `system`
    (a lower-case name for logs) and fill the three steps; `answer_ignored` shapes the 200
    for an `Ignored` event."""

    system = "webhook"

    def verify(self, ctx: Context, request) -> None:
        raise NotImplementedError

    def parse(self, ctx: Context, request) -> Any:
        raise NotImplementedError

    def dispatch(self, ctx: Context, event):
        raise NotImplementedError

    def answer_ignored(self, ignored: Ignored):
        return jsonify(status="ignored")

    def handle(self):
        """The route: the three steps, each answer counted for /metrics (source and status)."""
        try:
            answer = current_app.make_response(self._handle())
        except WebhookError as exc:
            count_webhook(self.system, exc.status)
            if isinstance(exc, SignatureError):
                count_signature_failure(request.path)
            raise
        except Exception:
            count_webhook(self.system, 500)
            raise
        count_webhook(self.system, answer.status_code)
        return answer

    def _handle(self):
        ctx = current_app.extensions["peerline"]
        try:
            self.verify(ctx, request)
            event = self.parse(ctx, request)
            if isinstance(event, Ignored):
                log.info("%s webhook ignored: %s", self.system, event.why)
                return self.answer_ignored(event)
            return self.dispatch(ctx, event)
        except RequestEntityTooLarge:
            raise PayloadTooLarge() from None
        except UNREACHABLE as exc:
            log.error("%s webhook: database out of reach (%s)", self.system, type(exc).__name__)
            raise Unavailable() from None

    @classmethod
    def route(cls, bp, path: str, *, endpoint: str | None = None, methods=("POST",)):
        """Add this webhook to `bp` at `path` (endpoint defaults to the class name, snake_cased)."""
        hook = cls()
        name = endpoint or "".join(f"_{c.lower()}" if c.isupper() else c for c in cls.__name__).lstrip("_")
        bp.add_url_rule(path, endpoint=name, view_func=hook.handle, methods=list(methods))
        return hook


def handle_webhook_error(exc: WebhookError):
    """The one answer to every WebhookError (registered once, by `init_app`)."""
    level = logging.INFO if exc.status in (400, 404) else logging.WARNING
    log.log(level, "webhook %s answered %s: %s", request.endpoint, exc.status, exc.message)
    answer = jsonify(exc.body())
    answer.status_code = exc.status
    answer.headers.update(exc.headers)
    return answer


class NoSessionForWebhooks(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions for our pages, none for a webhook: a sender is a machine
    that never gets a session cookie, so none is read, verified or signed for it (a twentieth of
    a webhook's CPU time: bench/intake.py). Nothing under `/webhooks/` may write the session: a
    null session refuses writes (a 500, which the sender retries)."""

    def open_session(self, app, request):
        if request.path.startswith(WEBHOOKS_PATH):
            return self.make_null_session(app)
        return super().open_session(app, request)


def init_app(app) -> None:
    app.register_error_handler(WebhookError, handle_webhook_error)
    app.session_interface = NoSessionForWebhooks()


# ---------------------------------------------------------------------------- step helpers

def require_token(expected: str | None, system: str) -> None:
    """The `token` query parameter must match, compared in constant time. NotConfigured (404)
    when this system has no token here; SignatureError (403) when it is wrong or missing."""
    if not expected:
        raise NotConfigured(system)
    if not hmac.compare_digest(request.args.get("token", "").encode(), expected.encode()):
        raise SignatureError("forbidden")


def parse_json(raw: bytes | str, field: str = "body") -> Any:
    """JSON text -> value; anything unreadable (not JSON, not UTF-8, nested past Python's
    recursion limit) is MalformedPayload naming `field`."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise MalformedPayload(field, "nested too deeply") from None
    except ValueError:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedPayload(field, "not JSON") from None


def require_fields(form, *names: str, allow_empty: bool = False) -> None:
    """Each of `names` must be in the form (and not empty, unless allow_empty)."""
    for name in names:
        if name not in form or (not allow_empty and not form.get(name)):
            raise MalformedPayload(name, "missing")


def record(ctx, *, system: str, retry_message: str, **submission) -> tuple[int, bool]:
    """Record the notice in the inbox and queue it; any failure to record is Unavailable (503),
    so the sender retries rather than the notice being lost."""
    try:
        return record_and_enqueue(ctx, **submission)
    except Exception as exc:
        log.error("%s notice not recorded (%s)", system, type(exc).__name__)
        raise Unavailable(retry_message) from None
