"""Catch-up: a form submission whose notice never arrived still becomes a case.

REDCap's Data Entry Trigger is never retried and Qualtrics stops retrying, so a notice lost
while we were down or unreachable would be a request lost. The periodic job `catch_up_forms`
asks each configured form system what was completed since it last read, and records each
through the same idempotent intake as the webhook, under the same source key: a submission
whose notice did arrive is not doubled (docs/architecture.md section 1, "The inbox is the
truth").

`ctx.catchups` maps a source to `find(ctx, since) -> [(source_key, payload), ...]`, or None
when that source is not configured; the integration knows the wire format, this module only
where it has read to. The place is kept in our database (`catchup_cursors`): the start of the
last run that succeeded, by the Context's clock. Each run reads again from a little before it
(OVERLAP), which costs nothing since intake is idempotent. A failed call keeps the place, so
the next run asks again from there. Logs carry sources and counts only.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from workflows.errors import PermanentError, TransientError
from workflows.inbox import record_and_enqueue

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.catchup")

#: Read again from this long before where the last run started (clock skew, slow saves).
OVERLAP = timedelta(minutes=10)
#: The first run of a source (no place kept yet) looks back this far.
FIRST_LOOKBACK = timedelta(days=1)


def run(ctx: Context) -> dict[str, int]:
    """One pass over every configured source. Returns source -> submissions newly recorded
    (a source that failed or is not configured is left out)."""
    recorded: dict[str, int] = {}
    for source in sorted(ctx.catchups):
        started = ctx.now()
        read_to = ctx.db.catchup_read_to(source)
        since = (read_to if read_to is not None else started - FIRST_LOOKBACK) - OVERLAP
        try:
            found = ctx.catchups[source](ctx, since)
            if found is None:      # not configured: no call was made, no place kept
                continue
            new = 0
            for source_key, payload in found:
                new += record_and_enqueue(ctx, source=source, source_key=source_key, payload=payload)[1]
        except (TransientError, PermanentError) as exc:   # their texts carry ids and statuses only
            log.warning("catch-up %s failed, will ask again from the same place next run: %s", source, exc)
            continue
        except Exception as exc:
            log.warning("catch-up %s failed, will ask again from the same place next run: %s",
                        source, type(exc).__name__)
            continue
        ctx.db.set_catchup_read_to(source, started)
        recorded[source] = new
        log.info("catch-up %s: %d completed since the last run, %d new", source, len(found), new)
    return recorded
