"""The one clock: every time Peerline stamps or compares comes from a `Clock`.

The web process, the worker, the CLI and the database layer share the Context's clock, so a
test that pins or advances it moves the whole service at once (and nothing drifts with the
calendar). Elapsed-time waits (pacing, lock polling) use `time.monotonic`, which is a
duration, not a date.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone


class Clock:
    """UTC now; `pin` stops it at a moment, `advance` moves it on (tests, `jobs run` catch-up)."""

    def __init__(self, at: datetime | None = None):
        self._pinned: datetime | None = None
        self._offset = timedelta(0)
        if at is not None:
            self.pin(at)

    def now(self) -> datetime:
        if self._pinned is not None:
            return self._pinned
        return datetime.now(timezone.utc) + self._offset

    __call__ = now

    def pin(self, at: datetime) -> None:
        """Stop the clock at `at` (an aware datetime, any zone)."""
        if at.tzinfo is None:
            raise ValueError("pin the clock to an aware datetime")
        self._pinned = at.astimezone(timezone.utc)

    def advance(self, delta: timedelta) -> None:
        """Move the clock on by `delta`, pinned or running."""
        if self._pinned is not None:
            self._pinned += delta
        else:
            self._offset += delta

    def release(self) -> None:
        """Run with the real time again (plus any offset)."""
        self._pinned = None
