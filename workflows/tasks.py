"""The worker's jobs: thin wrappers over the workflows, registered on a huey instance by
`register(huey)`. The composition root (`peerline_root.py`) builds that instance from the
settings and installs how the worker gets its Context; run the worker with:

    huey_consumer peerline_root.huey --workers 4 --worker-type thread

The queue is a courier, not a record: a task whose worker dies is lost, so every task starts
from an inbox row and `sweep_inbox` re-queues rows that are not finished and not known to be
queued (every minute, and once when a worker starts).
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from huey import crontab

from workflows import catchup, deadlines, followup, inbox, intake, notify, offers, purge, surveys, wellbeing

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.tasks")

#: Queue priorities, highest first (huey's SQLite, PostgreSQL and priority-Redis storages each
#: take the highest priority first, then the oldest). Crisis work jumps everything; a form
#: notice's answers are read next, as they may be a crisis (one fetch each, then routine work
#: goes back to the routine lane: workflows/intake.py); periodic jobs run ahead of routine work,
#: so a backlog of cases cannot make the clock late.
PRIORITY_CRISIS = 100
PRIORITY_UNREAD = 75
PRIORITY_PERIODIC = 50
PRIORITY_NORMAL = 0
#: An inbox row's lane (workflows/inbox.py) -> its queue priority.
PRIORITIES = {"crisis": PRIORITY_CRISIS, "unread": PRIORITY_UNREAD, "routine": PRIORITY_NORMAL}

_context = None
_context_factory: Callable | None = None
_context_lock = threading.Lock()


def install_context_factory(factory: Callable) -> None:
    """The composition root says how the worker builds its Context (once per process)."""
    global _context_factory
    _context_factory = factory


def worker_context():
    """The worker's Context, built once per process by the factory the root installed."""
    global _context
    with _context_lock:
        if _context is None:
            if _context_factory is None:
                raise RuntimeError("no Context for the worker: start it as `huey_consumer peerline_root.huey`")
            _context = _context_factory()
        return _context


def use_context(ctx: Context | None) -> None:
    """Tests hand in their own Context (None: build it again)."""
    global _context
    with _context_lock:
        _context = ctx


# ---- the jobs (each safe to run twice, late, or on two workers at once) ----

def process_submission(inbox_id: int) -> None:
    # Queued ahead of routine work, an unread notice only reads its answers here (intake.py).
    intake.process_submission(worker_context(), inbox_id, triage=True)


def sweep(ctx: Context) -> int:
    """Re-queue, each in its lane, the inbox rows the queue may have lost: never queued, or
    queued longer than the lease ago and still unclaimed (a row queued within the lease is
    only waiting its turn in a long queue). Returns how many."""
    lease = int(ctx.settings["INBOX_LEASE_SECONDS"])
    rows = ctx.db.take_submissions_to_requeue(ctx.now(), lease_seconds=lease)
    for inbox_id, priority in rows:
        inbox.enqueue(ctx, inbox_id, priority)
    if rows:
        log.info("sweep re-queued %d submissions", len(rows))
    return len(rows)


def sweep_inbox() -> None:
    """Unfinished submissions (new, due for a retry, or left by a dead worker) queued again."""
    sweep(worker_context())


def sweep_at_start() -> None:
    # A restarted worker picks up at once what its predecessor left behind.
    try:
        sweep(worker_context())
    except Exception:  # never keep a worker from starting
        log.exception("start-up sweep failed")


def deliver_messages() -> None:
    """Messages whose time has come: routine SMS held past quiet hours, retries that are
    due (crisis ones first), sends a dead worker left half done; then tell program leads of
    messages that could not reach their person, and catch up the Messages mirror. Every
    message goes through the ledger, so a late or doubled run sends nothing twice."""
    notify.run_due(worker_context())


def forget_webhook_events() -> None:
    """Provider event ids are kept 30 days for dedupe (SendGrid retries for at most a day or so)."""
    ctx = worker_context()
    ctx.db.forget_webhook_events(ctx.now() - timedelta(days=30))


# Approvals, offers and the review clock (workflows/offers.py, workflows/deadlines.py): offers
# change under a per-case lock, every message goes through the ledger, and each reminder's
# Event is written once.

def poll_approvals() -> None:
    """The safety net: what a coordinator changed in the case store (Approved, Closed,
    Withdrawn, Tier 3 Referral) is carried out; it reads every minute, or every hour while the
    Airtable webhook is healthy, and only the cases changed since (workflows/watch.py). A
    webhook ping gets there first, through `poll_approvals_now`."""
    followup.poll(worker_context())


def poll_approvals_now() -> None:
    """Queued by an Airtable webhook ping: the same poll, at once."""
    followup.poll(worker_context(), nudged=True)


def expire_offers() -> None:
    """Offers past their expiry go to the next candidate."""
    offers.expire_due(worker_context())


def review_clock() -> None:
    """Reminders and escalations: reviews due soon or overdue, contact not yet made."""
    deadlines.run(worker_context())


def purge_cases() -> None:
    """Daily: cases past the retention period (and declined colleague referrals) lose every
    personal detail in every sink; each gets a receipt Event (workflows/purge.py)."""
    purge.run(worker_context())


# After the first contact (workflows/followup.py): each step once, under the case's lock and
# the milestones, however often or late these run.

def auto_close() -> None:
    """Contacted or Referred cases with nothing open close themselves [followup] close_after_days
    after contact."""
    followup.close_due(worker_context())


def catch_up_forms() -> None:
    """Every 10 minutes: Qualtrics responses and REDCap records completed since the last run
    that no notice brought (REDCap never retries, Qualtrics stops), recorded through the same
    idempotent intake as the webhooks (workflows/catchup.py)."""
    catchup.run(worker_context())


def _cron(minute: str = "*", hour: str = "*"):
    """huey's crontab, remembering how to say it in words (`flask jobs run` lists it)."""
    schedule = crontab(minute=minute, hour=hour)
    if minute == "*":
        words = "every minute"
    elif minute.startswith("*/"):
        words = f"every {minute[2:]} minutes"
    elif hour == "*":
        words = f"hourly at :{int(minute):02d}"
    elif hour.startswith("*/"):
        words = f"every {hour[2:]} hours at :{int(minute):02d}"
    else:
        words = f"daily at {int(hour):02d}:{int(minute):02d} UTC"
    schedule.peerline_spec = words
    return schedule


def run_followup_clock(ctx: Context) -> int:
    """One pass of the second half's clock: check-ins and surveys that are due, each once
    (one run at a time; an overlapping run returns at once). Returns how many went out."""
    try:
        with ctx.db.lock("followup_clock", ttl_seconds=600, wait_seconds=0):
            return wellbeing.run(ctx) + surveys.run(ctx)
    except TimeoutError:
        log.info("followup clock already running elsewhere; skipped")
        return 0


def followup_clock() -> None:
    """After contact: the supporter's check-in ([followup] checkin_after_hours) and the
    surveys ([followup] survey_after_days)."""
    run_followup_clock(worker_context())


#: Periodic jobs: (function, schedule). The function's name is the task's name in the queue.
PERIODIC = (
    (sweep_inbox, _cron("*")),
    (deliver_messages, _cron("*")),
    (forget_webhook_events, _cron("17", "3")),
    (poll_approvals, _cron("*")),
    (expire_offers, _cron("*")),
    (review_clock, _cron("*/5")),
    (auto_close, _cron("23")),
    (purge_cases, _cron("23", "4")),
    (followup_clock, _cron("*/15")),
    (catch_up_forms, _cron("*/10")),
)


def periodic_jobs(refresh_webhooks: Callable = lambda ctx: None) -> dict[str, tuple[Callable, object]]:
    """Every periodic job by name: (function, huey crontab). `refresh_webhooks(ctx)`: the root's."""

    def refresh_airtable_webhooks() -> None:
        """Every 2 hours: check our Airtable webhook (its health sets how often the poll reads,
        workflows/watch.py), and refresh it a day into its 7 days, so that many failed runs
        cannot lose it."""
        refresh_webhooks(worker_context())

    jobs = PERIODIC + ((refresh_airtable_webhooks, _cron("41", "*/2")),)
    return {function.__name__: (function, schedule) for function, schedule in jobs}


def describe_schedule(schedule) -> str:
    """A crontab in words (`flask jobs run` with no name)."""
    spec = getattr(schedule, "peerline_spec", None)
    return spec or "periodic"


def run_job(ctx: Context, function: Callable) -> None:
    """Run one periodic job now, in this process, on `ctx` (`flask jobs run NAME`)."""
    global _context
    with _context_lock:
        before, _context = _context, ctx
    try:
        function()
    finally:
        with _context_lock:
            _context = before


class Queue:
    """The registered tasks of one huey instance, and how to queue work on it. A task is
    also an attribute (`queue.expire_offers.call_local()` runs it in this process)."""

    def __init__(self, huey, tasks: dict, jobs: dict):
        self.huey, self.tasks, self.jobs = huey, tasks, jobs

    def __getattr__(self, name):
        try:
            return self.__dict__["tasks"][name]
        except KeyError:
            raise AttributeError(name) from None

    def enqueue_submission(self, inbox_id: int, *, priority: str = "routine", delay: float | None = None) -> None:
        """Queue an inbox row's task in its lane ("routine", "unread", "crisis")."""
        priority = PRIORITIES[priority]
        task = self.tasks["process_submission"]
        if delay:
            task.schedule(args=(inbox_id,), delay=delay, priority=priority)
        else:
            self.huey.enqueue(task.s(inbox_id, priority=priority))

    def run_soon(self, name: str) -> None:
        """Queue a named job now (Context.run_soon), e.g. "poll_approvals" when Airtable pings."""
        self.huey.enqueue(self.jobs[name].s())


def register(huey, *, refresh_webhooks: Callable = lambda ctx: None) -> Queue:
    """Register every task on `huey` and return them as a Queue. `refresh_webhooks(ctx)` is
    the root's: it keeps an outside system's webhooks alive (Airtable's), which a workflow
    cannot do without importing an integration."""

    tasks = {"process_submission": huey.task(name="process_submission")(process_submission),
             "poll_approvals_now": huey.task(name="poll_approvals_now", priority=PRIORITY_PERIODIC)(poll_approvals_now)}
    for function, schedule in periodic_jobs(refresh_webhooks).values():
        tasks[function.__name__] = huey.periodic_task(schedule, name=function.__name__,
                                                      priority=PRIORITY_PERIODIC)(function)
    huey.on_startup()(sweep_at_start)
    #: Jobs the web process may queue by name (Context.run_soon).
    return Queue(huey, tasks, jobs={"poll_approvals": tasks["poll_approvals_now"]})
