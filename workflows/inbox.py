"""Taking a submission in: store it durably in the inbox, then queue it for the worker.

Every way a request arrives (the built-in form in `web/`, the Qualtrics and REDCap webhooks in
`integrations/`) ends here. The inbox row is the truth, so a queue that fails to take the task
loses nothing: the sweep re-queues it (docs/architecture.md section 1).

Each row has a queue lane, kept in the row so that its retries and sweeps use it too:
"crisis"; "unread", a form notice whose answers are not fetched yet (it may be a crisis, so it is
read ahead of routine work: workflows/intake.py); "routine".
"""
from __future__ import annotations

import logging

log = logging.getLogger("peerline.inbox")


def lane(ctx, source: str, crisis: bool) -> str:
    """The lane of a new submission: answers still to fetch (an outside form's notice) are
    unread, whatever the notice says."""
    if crisis:
        return "crisis"
    return "unread" if source in ctx.fetchers else "routine"


def record_and_enqueue(ctx, *, source: str, source_key: str, payload: dict,
                       crisis: bool = False) -> tuple[int, bool]:
    """Store a submission durably, then queue it (only the first delivery of a key).
    Returns (inbox id, whether this delivery was new) once the row is on disk, in its lane
    (`lane`). A crisis is queued before this returns; other work may be queued just after, by
    the request that wrote the same transaction (database group commit), so a burst's answers
    do not wait for the queue: should the process die in between, the sweep queues it."""
    priority = lane(ctx, source, crisis)
    crisis_now = priority == "crisis"
    inbox_id, new = ctx.db.record_submission(
        source=source, source_key=source_key, payload=payload, priority=priority,
        on_new=None if crisis_now else (lambda row_id: enqueue(ctx, row_id, priority)))
    if new and crisis_now:
        enqueue(ctx, inbox_id, priority)
    return inbox_id, new


def enqueue(ctx, inbox_id: int, priority: str, delay: float | None = None) -> None:
    """Queue a row's task in its lane (after `delay` seconds). A queue that refuses it loses
    nothing: the row is marked not queued and the next sweep queues it."""
    try:
        ctx.enqueue(inbox_id, priority=priority, delay=delay)
    except Exception:  # the inbox row is the truth; the sweep will queue it
        log.exception("enqueue failed inbox=%s; the sweep will pick it up", inbox_id)
        try:
            ctx.db.mark_unqueued(inbox_id)
        except Exception:  # the row is still found by the sweep, one lease later
            log.exception("could not mark inbox=%s as not queued", inbox_id)
