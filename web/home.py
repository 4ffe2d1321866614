"""`GET /`, the landing page, and the error pages of the whole service.

Every page a person sees shows the crisis resources (988) first, error pages included.
Routes that machines call (webhooks under /webhooks/, /healthz, /readyz) keep answering
errors as JSON, which is what their senders and the platform expect. No error page repeats
anything from the request (no path, query or form value) and a 500 never shows a traceback.
"""
from __future__ import annotations

import logging
import traceback

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

log = logging.getLogger("peerline.web")

bp = Blueprint("home", __name__)

#: Paths answered by machines: their errors stay JSON.
MACHINE_PREFIXES = ("/webhooks/", "/healthz", "/readyz", "/metrics")

#: What a person is told for each error, beside the crisis resources.
PAGES = {
    404: ("We could not find this page.",
          "The link may be mistyped or out of date. Nothing you sent was affected."),
    405: ("This page cannot be used that way.",
          "Please open the page from its link and use its buttons."),
    413: ("That was more than this page can take.",
          "Nothing was sent. Please shorten your answers and try again."),
    429: ("Please wait a few minutes, then try again.",
          "Many requests arrived in a short time, so we paused new ones for a moment."),
    500: ("Something went wrong on our side.",
          "We have been told about it. Please try again in a few minutes."),
    503: ("We cannot take requests for a moment.",
          "Nothing was saved. Please try again in a minute or two."),
}

#: Database failures that mean "out of reach" (refused, dropped, locked past
#: DATABASE_WAIT_SECONDS, no pooled connection free in time): 503 with Retry-After, not a 500.
UNREACHABLE = (sa.exc.OperationalError, sa.exc.TimeoutError)

#: What a person or a sender is told to wait before retrying when the database is out of reach.
RETRY_AFTER_SECONDS = 60


def _page_context() -> dict:
    ctx = current_app.extensions["peerline"]
    return {"crisis": ctx.program.crisis, "program": ctx.program.program}


@bp.get("/")
def landing():
    return render_template("home.html", **_page_context())


def _is_machine_route() -> bool:
    return request.path.startswith(MACHINE_PREFIXES) or request.path.endswith(".json")


def handle_http_error(exc: HTTPException):
    code = exc.code or 500
    if _is_machine_route():
        message = {413: "request body too large", 503: "temporarily unavailable; please retry"}
        response = jsonify(error=message.get(code) or (exc.name or "error").lower())
        response.status_code = code
    else:
        template = "busy.html" if code == 429 and request.endpoint == "request_form.request_form" else "error.html"
        heading, advice = PAGES.get(code, PAGES[500])
        response = current_app.make_response(
            (render_template(template, code=code, heading=heading, advice=advice, **_page_context()), code))
    # Keep headers the error carries (Allow on 405, Retry-After on 429).
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def handle_unexpected(exc: Exception):
    if isinstance(exc, HTTPException):   # an abort() with a code not handled above: as it was
        return exc
    if isinstance(exc, UNREACHABLE):
        log.error("database out of reach on endpoint=%s (%s)", request.endpoint, type(exc).__name__)
        return handle_http_error(ServiceUnavailable(retry_after=RETRY_AFTER_SECONDS))
    # Type, endpoint and code locations only: an exception's message may quote what a person typed.
    where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                        for f in reversed(traceback.extract_tb(exc.__traceback__)))
    log.error("unhandled %s on endpoint=%s at %s", type(exc).__name__, request.endpoint, where)
    return handle_http_error(InternalServerError())


def init_app(app) -> None:
    app.register_blueprint(bp)
    for code in PAGES:
        app.register_error_handler(code, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
