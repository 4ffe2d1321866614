"""Taking a submission in: store it durably in the inbox, then queue it for the worker.

Every way a request arrives (the built-in form in `web/`, the Qualtrics and REDCap webhooks in
`integrations/`) ends here. The inbox row is the truth, so a queue that fails to take the task
loses nothing: the sweep re-queues it (docs/architecture.md section 1).
"""
from __future__ import annotations

import logging

log = logging.getLogger("peerline.inbox")


def record_and_enqueue(ctx, *, source: str, source_key: str, payload: dict,
                       crisis: bool = False) -> tuple[int, bool]:
    """Store a submission durably, then queue it (only the first delivery of a key).
    Returns (inbox id, whether this delivery was new) once the row is on disk. A crisis is
    queued before this returns; routine work may be queued just after, by the request that
    wrote the same transaction (database group commit), so a burst's answers do not wait
    for the queue: should the process die in between, the sweep queues it."""
    def enqueue(inbox_id: int) -> None:
        try:
            ctx.enqueue(inbox_id, crisis=crisis)
        except Exception:  # the inbox row is the truth; the sweep will queue it
            log.exception("enqueue failed inbox=%s; the sweep will pick it up", inbox_id)

    inbox_id, new = ctx.db.record_submission(source=source, source_key=source_key, payload=payload,
                                             on_new=None if crisis else enqueue)
    if new and crisis:
        enqueue(inbox_id)
    return inbox_id, new
