"""What every inbound webhook does the same way: answer a malformed payload with a 400 that
names the field, check a secret query token in constant time, and record-then-enqueue.

The web process only verifies, records the notice in the inbox and queues it; the inbox row
is the truth, so a queue that fails to take the task loses nothing (the sweep re-queues it).
"""
from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from flask import jsonify, request

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.webhooks")


def bad_request(field: str, why: str):
    """400 naming the field, e.g. {"error": "ResponseID: missing", "field": "ResponseID"}."""
    return jsonify(error=f"{field}: {why}", field=field), 400


def refuse_without_token(expected: str | None, system: str):
    """None when the `token` query parameter matches; else the answer to send: 404 when this
    system is not configured here, 403 when the token is wrong or missing."""
    if not expected:
        return jsonify(error=f"{system} is not configured on this server"), 404
    if not hmac.compare_digest(request.args.get("token", "").encode(), expected.encode()):
        log.warning("%s webhook refused: wrong or missing token", system.lower())
        return jsonify(error="forbidden"), 403
    return None


def record_and_enqueue(ctx: Context, *, source: str, source_key: str, payload: dict,
                       crisis: bool = False) -> tuple[int, bool]:
    """Store a submission durably, then queue it (only the first delivery of a key)."""
    inbox_id, new = ctx.db.record_submission(source=source, source_key=source_key, payload=payload)
    if new:
        try:
            ctx.enqueue(inbox_id, crisis=crisis)
        except Exception:  # the inbox row is the truth; the sweep will queue it
            log.exception("enqueue failed inbox=%s; the sweep will pick it up", inbox_id)
    return inbox_id, new
