"""Flyer scans, `GET /f/<tag>` (docs/architecture.md section 4): the link in a flyer's QR code.

Counted per tag and day by workflows/flyers.py (no address, no cookie, no user agent; the
access log shows the path only), then a 302 to the flyer's form. Never a 500 and never a
page of its own: a known tag, an unknown one and a store out of reach all answer with the same
kind of redirect, so the answer says nothing about a tag beyond where it leads.
"""
from __future__ import annotations

import logging

from flask import Blueprint, current_app, redirect

from workflows import flyers

log = logging.getLogger("peerline.web.flyers")

bp = Blueprint("flyers", __name__)


@bp.get("/f/<path:tag>")
def scan(tag: str):
    try:
        target = flyers.scan(current_app.extensions["peerline"], tag)
    except Exception as exc:    # pragma: no cover - scan() already keeps its own failures
        log.warning("flyer scan failed: %s", type(exc).__name__)
        target = flyers.BUILTIN_FORM
    response = redirect(target, 302)
    # Each scan should reach us (to be counted), and the form should not learn the flyer's URL
    # from a Referer; no cookie is set on this answer.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)
