"""The huey instance and thin task wrappers. Run the worker with:

    huey_consumer workflows.tasks.huey --workers 4 --worker-type thread

The queue is a courier, not a record: a task whose worker dies is lost, so every task starts
from an inbox row and `sweep_inbox` re-queues rows that are not finished (every minute, and
once when a worker starts). Queue storage follows the settings: Redis when REDIS_URL is set,
else the PostgreSQL of DATABASE_URL, else SQLite in DATA_DIR.
"""
from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from huey import Huey, PostgresHuey, PriorityRedisHuey, crontab
from huey.storage import SqliteStorage

from config import settings as settings_module

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.tasks")

#: Crisis work jumps the queue.
PRIORITY_CRISIS = 100
PRIORITY_NORMAL = 0


class QueueStorage(SqliteStorage):
    """huey's SQLite storage in WAL mode with synchronous=NORMAL: a commit does not wait for
    the disk. Safe from corruption; a power cut may lose the newest queue entries, which the
    sweep re-queues from the inbox (whose commits do wait for the disk)."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


def make_huey(values: dict):
    if values.get("REDIS_URL"):
        # The priority variant: plain RedisHuey refuses task priorities, and crisis work has one.
        return PriorityRedisHuey("peerline", url=values["REDIS_URL"], results=False)
    url = values.get("DATABASE_URL")
    if url and url.startswith(("postgres://", "postgresql")):
        dsn = "postgresql://" + url.split("://", 1)[1]
        return PostgresHuey("peerline", dsn=dsn, results=False)
    os.makedirs(values["DATA_DIR"], exist_ok=True)
    return Huey("peerline", storage_class=QueueStorage, results=False,
                filename=os.path.join(values["DATA_DIR"], "queue.db"))


huey = make_huey(settings_module.load())

_context = None
_context_lock = threading.Lock()


def worker_context():
    """The worker's Context, built once per process from the environment."""
    global _context
    with _context_lock:
        if _context is None:
            from integrations import build_context
            _context = build_context(settings_module.load(), enqueue=enqueue_submission)
        return _context


def use_context(ctx: Context) -> None:
    """Tests and the CLI hand in their own Context."""
    global _context
    with _context_lock:
        _context = ctx


@huey.task(name="process_submission")
def process_submission(inbox_id: int) -> None:
    from workflows import intake
    intake.process_submission(worker_context(), inbox_id)


def enqueue_submission(inbox_id: int, *, crisis: bool = False, delay: float | None = None) -> None:
    priority = PRIORITY_CRISIS if crisis else PRIORITY_NORMAL
    if delay:
        process_submission.schedule(args=(inbox_id,), delay=delay, priority=priority)
    else:
        huey.enqueue(process_submission.s(inbox_id, priority=priority))


def sweep(ctx: Context) -> int:
    """Re-queue every inbox row the queue may have lost. Returns how many."""
    lease = int(ctx.settings["INBOX_LEASE_SECONDS"])
    ids = ctx.db.submissions_to_requeue(ctx.now(), grace_seconds=min(60, lease))
    for inbox_id in ids:
        ctx.enqueue(inbox_id)
    if ids:
        log.info("sweep re-queued %d submissions", len(ids))
    return len(ids)


@huey.periodic_task(crontab(minute="*"), name="sweep_inbox")
def sweep_inbox() -> None:
    sweep(worker_context())


@huey.on_startup()
def _sweep_at_start() -> None:
    # A restarted worker picks up at once what its predecessor left behind.
    try:
        sweep(worker_context())
    except Exception:  # never keep a worker from starting
        log.exception("start-up sweep failed")


@huey.periodic_task(crontab(minute="*"), name="deliver_messages")
def deliver_messages() -> None:
    """Messages whose time has come: routine SMS held past quiet hours, retries that are
    due (crisis ones first), sends a dead worker left half done; then tell program leads of
    messages that could not reach their person, and catch up the Messages mirror. Every
    message goes through the ledger, so a late or doubled run sends nothing twice."""
    from workflows import notify
    notify.run_due(worker_context())


@huey.periodic_task(crontab(minute="17", hour="3"), name="forget_webhook_events")
def forget_webhook_events() -> None:
    """Provider event ids are kept 30 days for dedupe (SendGrid retries for at most a day or so)."""
    ctx = worker_context()
    ctx.db.forget_webhook_events(ctx.now() - timedelta(days=30))


# ---- approvals, offers and the review clock (workflows/offers.py, workflows/deadlines.py) ----
# Each is safe to run twice, late, or on two workers at once: offers change under a per-case
# lock, every message goes through the ledger, and each reminder's Event is written once.

@huey.periodic_task(crontab(minute="*"), name="poll_approvals")
def poll_approvals() -> None:
    """The safety net: every minute, Approved cases not yet offered are offered (an Airtable
    webhook ping usually gets there first, through `poll_approvals_now`)."""
    from workflows import offers
    offers.poll_approvals(worker_context())


@huey.task(name="poll_approvals_now")
def poll_approvals_now() -> None:
    from workflows import offers
    offers.poll_approvals(worker_context())


@huey.periodic_task(crontab(minute="*"), name="expire_offers")
def expire_offers() -> None:
    """Offers past their expiry go to the next candidate."""
    from workflows import offers
    offers.expire_due(worker_context())


@huey.periodic_task(crontab(minute="*/5"), name="review_clock")
def review_clock() -> None:
    """Reminders and escalations: reviews due soon or overdue, contact not yet made."""
    from workflows import deadlines
    deadlines.run(worker_context())


@huey.periodic_task(crontab(minute="41", hour="*/6"), name="refresh_airtable_webhooks")
def refresh_airtable_webhooks() -> None:
    """Airtable deletes a webhook 7 days after its creation or last refresh: refresh ours
    four times a day, so a few failed runs cannot lose it."""
    ctx = worker_context()
    from integrations import airtable
    if isinstance(ctx.store, airtable.AirtableCaseStore):
        airtable.refresh_webhooks(ctx.store, ctx.settings["PUBLIC_BASE_URL"])


#: Jobs the web process may queue by name (Context.run_soon).
JOBS = {"poll_approvals": poll_approvals_now}


def run_soon(name: str) -> None:
    huey.enqueue(JOBS[name].s())
