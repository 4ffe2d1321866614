"""When the worker reads the case store, so that a quiet Airtable base costs almost no requests
(Airtable's Free and Team plans cap calls a month; docs/architecture.md section 8).

Two kinds of reader:

- The store-changes poll (`followup.poll`, the jobs `poll_approvals` and `poll_approvals_now`)
  reads only the cases made or changed since its last read (`store.cases_changed_since`). It
  runs at once when the Airtable webhook pings, and as a safety net every minute, or only
  every HEALTHY_PERIOD while the webhook is healthy. Healthy: the last check of the webhook
  (`refresh_airtable_webhooks`) found it on, unexpired and its last delivery not failed, that
  check is recent (HEALTH_VALID), and no ping was refused since. Airtable pings only when
  something changes, so at idle it is the check, not the pings, that says the webhook works.
  A run where a case failed, or a ping after the last read, makes the next minute read again.
- The clocks (`review_clock`, `auto_close`, `followup_clock`) read whole lists of cases. Each
  notes when it read and the earliest moment it found ahead (`clock_read`), and reads again
  only when that moment comes. The poll, which reads every changed case anyway, tells each
  clock the earliest moment among them (`note_changed`: a hint), so a new case or a YES
  costs the clocks no read until something of it is due. Our own changes reach the hints
  through the poll's next read, within HEALTHY_PERIOD: the clocks' deadlines are hours away.
  Each clock reads at least once a week (insurance only: a full read costs a request per 100
  cases, which a big base feels).

A store whose reads are not outside requests (`reads_are_requests` False: our own database)
skips nothing. The marks are times in our own database (`ctx.db.mark`), shared by every
process: the web process notes pings, the worker reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from workflows.context import Context

#: The safety-net poll's period while the webhook is healthy (else every minute).
HEALTHY_PERIOD = timedelta(hours=1)
#: How long one good check of the webhook counts (the check runs every 2 hours).
HEALTH_VALID = timedelta(hours=5)
#: The poll reads again from this long before its last read (Airtable's clock and ours).
OVERLAP = timedelta(minutes=5)
#: A clock with nothing ahead still reads this often.
CLOCK_MAX_SKIP = timedelta(days=7)

READ = "store-changes:read"           # start of the last read whose cases were all handled
FAILED = "store-changes:failed"       # start of the last read that met an error
PING = "airtable:ping"                # the last genuine ping
PING_REFUSED = "airtable:ping-refused"
HOOK_CHECKED = "airtable:webhook-checked"
HOOK_OK_UNTIL = "airtable:webhook-ok-until"


def reads_cost(ctx: Context) -> bool:
    return bool(getattr(ctx.store, "reads_are_requests", False))


# ---------------------------------------------------------------------------- the webhook

def note_ping(ctx: Context) -> None:
    """A genuine ping arrived (the web process): the next poll reads, whoever runs it."""
    ctx.db.set_mark(PING, ctx.now())


def note_ping_refused(ctx: Context) -> None:
    """A ping failed its MAC (a wrong or missing secret on our side): poll every minute until
    a check of the webhook says it works again."""
    ctx.db.set_mark(PING_REFUSED, ctx.now())


def note_webhook_check(ctx: Context, healthy_until: datetime | None) -> None:
    """The webhook check's verdict: healthy until when (its expiry), or None: not healthy."""
    now = ctx.now()
    ctx.db.set_mark(HOOK_CHECKED, now)
    ctx.db.set_mark(HOOK_OK_UNTIL, min(healthy_until, now + HEALTH_VALID) if healthy_until else now)


def webhook_healthy(ctx: Context, marks: dict | None = None) -> bool:
    marks = marks or ctx.db.marks(HOOK_CHECKED, HOOK_OK_UNTIL, PING_REFUSED)
    ok_until, checked, refused = marks[HOOK_OK_UNTIL], marks[HOOK_CHECKED], marks[PING_REFUSED]
    if ok_until is None or ok_until <= ctx.now():
        return False
    return refused is None or checked is None or refused < checked


# ---------------------------------------------------------------------------- the poll

def poll_due(ctx: Context) -> bool:
    """Whether the periodic poll reads now (a ping's poll always does)."""
    marks = ctx.db.marks(READ, FAILED, PING, HOOK_CHECKED, HOOK_OK_UNTIL, PING_REFUSED)
    read = marks[READ]
    if read is None or not reads_cost(ctx):
        return True
    if any(marks[m] is not None and marks[m] > read for m in (FAILED, PING)):
        return True
    return not webhook_healthy(ctx, marks) or ctx.now() - read >= HEALTHY_PERIOD


def read_since(ctx: Context) -> datetime | None:
    """Where the poll reads from: a little before its last complete read (None: everything)."""
    read = ctx.db.mark(READ)
    return read - OVERLAP if read is not None else None


def poll_read(ctx: Context, started: datetime, *, failed: bool) -> None:
    ctx.db.set_mark(FAILED if failed else READ, started)


# ---------------------------------------------------------------------------- the clocks

@dataclass
class ClockRun:
    """A clock's full read that is due: when it started, and the hint it serves."""
    name: str
    started: datetime
    hint: datetime | None


def clock_start(ctx: Context, name: str) -> ClockRun | None:
    """A ClockRun when the clock `name` must read the cases now, else None (see the module's
    docstring)."""
    hint_name = f"{name}:hint"
    marks = ctx.db.marks(f"{name}:read", f"{name}:next", hint_name)
    read, ahead, hint = marks[f"{name}:read"], marks[f"{name}:next"], marks[hint_name]
    now = ctx.now()
    run = ClockRun(name, now, hint)
    if not reads_cost(ctx) or read is None or ahead is None or now - read >= CLOCK_MAX_SKIP:
        return run
    return run if ahead <= now or (hint is not None and hint <= now) else None


def clock_read(ctx: Context, run: ClockRun, moments: Iterable[datetime | None]) -> None:
    """After the clock's full read: the moments at which something of the cases it read comes
    due (a moment past: read again next run). The hint it started with is served (the cases it
    came from were read); one the poll lowered meanwhile is kept."""
    found = [m for m in moments if m is not None]
    ctx.db.set_mark(f"{run.name}:read", run.started)
    ctx.db.set_mark(f"{run.name}:next", min(found) if found else run.started + CLOCK_MAX_SKIP)
    if run.hint is not None:
        ctx.db.clear_mark_if(f"{run.name}:hint", run.hint)


def note_changed(ctx: Context, cases: list, clocks: dict) -> None:
    """The poll read these changed cases: each clock (name -> moments(ctx, case)) is told the
    earliest moment among them, so it reads no sooner and no later than it must."""
    if not reads_cost(ctx):
        return
    for name, moments_of in clocks.items():
        found = [m for case in cases for m in moments_of(ctx, case) if m is not None]
        if found:
            ctx.db.lower_mark(f"{name}:hint", min(found))
