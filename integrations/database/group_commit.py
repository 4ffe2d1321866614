"""Group commit: requests that arrive while a transaction is being written share the next one.

A submission's 2xx waits for its commit to reach the disk (one fsync on SQLite with WAL and
synchronous=FULL, one WAL flush on PostgreSQL), and SQLite writes one transaction at a time. One
transaction per request makes a burst of N wait for N fsyncs in turn; here whoever arrives
while a transaction is being written is written together in the next one, so a burst costs a
few fsyncs, not N. Nobody is answered before their own transaction has committed.

Leader and followers, no thread of its own: the caller that finds nobody writing begins a
transaction and, once it holds the database's write lock, writes everything queued by then
(itself included); the others wait. When it has committed, it hands the lead to the oldest
waiter, releases the others, and only then runs the batch's `then` callbacks (queueing the
work for the worker), so the others' answers do not wait for them.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

log = logging.getLogger("peerline.database")


class _Waiter:
    __slots__ = ("item", "then", "event", "lead", "result", "error")

    def __init__(self, item, then):
        self.item, self.then, self.event, self.lead = item, then, threading.Event(), False
        self.result, self.error = None, None

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """`submit(item, then)` returns the result `write(take)` gives `item`. `write` begins the
    transaction, calls `take()` once for the items queued at that moment (those that arrived
    while it waited for the database's lock included) and returns one result per item, in
    order, once committed. If it raises, every item of that batch raises the same error.
    `then(result)`, when given, runs after the commit in the writing caller's thread; it must
    not raise (it is logged if it does)."""

    def __init__(self, write: Callable[[Callable[[], list]], list]):
        self._write = write
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._writing = False

    def submit(self, item, then: Callable[[Any], None] | None = None) -> Any:
        me = _Waiter(item, then)
        with self._lock:
            self._queue.append(me)
            lead = not self._writing
            self._writing = True
        if not lead:
            me.event.wait()
            if not me.lead:          # written by another caller, who runs its `then`
                return me.outcome()
        batch: list[_Waiter] = []

        def take() -> list:
            with self._lock:
                batch.extend(self._queue)
                self._queue = []
            return [w.item for w in batch]

        try:
            results = self._write(take)
            if not batch or len(results) != len(batch):
                raise RuntimeError("group commit: write() must take() once and answer each item")
            for waiter, result in zip(batch, results):
                waiter.result = result
        except BaseException as exc:   # every caller of this batch learns it failed
            if not batch:
                take()
            for waiter in batch:
                waiter.error = exc
        with self._lock:
            if self._queue:          # the next transaction is the oldest waiter's to write
                self._queue[0].lead = True
                self._queue[0].event.set()
            else:
                self._writing = False
        for waiter in batch:
            if waiter is not me:
                waiter.event.set()
        for waiter in batch:
            if waiter.then is not None and waiter.error is None:
                try:
                    waiter.then(waiter.result)
                except Exception:
                    log.exception("after-commit step failed")
        return me.outcome()
