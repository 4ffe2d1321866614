"""The composition root: the one place that puts Peerline together for each process.

    web and CLI   app.create_app() -> context(values)     (flask --app app ..., gunicorn 'app:create_app()')
    worker        huey_consumer peerline_root.huey --workers 4 --worker-type thread ...

`context(values)` builds the Context through `integrations.build_context` (which backend for
which settings) and connects it to the queue: `ctx.enqueue` and `ctx.run_soon` put work on the
huey instance of the same settings. The worker's Context comes from here too
(`workflows.tasks.install_context_factory`), so web, worker and CLI run the same code on the
same backends. Nothing is built at import: the queue is made on first use.

Queue storage follows the settings: Redis when REDIS_URL is set, else the PostgreSQL of
DATABASE_URL, else SQLite in DATA_DIR (docs/architecture.md section 3).
"""
from __future__ import annotations

import os
import threading

from huey import Huey, PostgresHuey, PriorityRedisHuey
from huey.storage import SqliteStorage

from config import settings as settings_module
from integrations import airtable, build_context
from workflows import tasks

_queues: dict[tuple, tasks.Queue] = {}
_queues_lock = threading.Lock()


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
        # Like QueueStorage below, a queue commit does not wait for the disk (the inbox's does):
        # a crash may lose the newest entries, which the sweep re-queues from the inbox.
        return PostgresHuey("peerline", dsn=dsn, results=False, options="-c synchronous_commit=off")
    os.makedirs(values["DATA_DIR"], exist_ok=True)
    return Huey("peerline", storage_class=QueueStorage, results=False,
                filename=os.path.join(values["DATA_DIR"], "queue.db"))


def refresh_webhooks(ctx) -> None:
    """The job `refresh_airtable_webhooks` (workflows.tasks): only when the case store is Airtable."""
    if isinstance(ctx.store, airtable.AirtableCaseStore):
        airtable.check_webhooks(ctx)


def queue(values: dict | None = None) -> tasks.Queue:
    """The queue of these settings (the environment's when None), built once per process."""
    values = values if values is not None else settings_module.load()
    key = (values.get("REDIS_URL"), values.get("DATABASE_URL"), values.get("DATA_DIR"))
    with _queues_lock:
        if key not in _queues:
            _queues[key] = tasks.register(make_huey(values), refresh_webhooks=refresh_webhooks)
        return _queues[key]


def context(values: dict, *, clock=None):
    """The Context of one process, connected to the queue of the same settings (made on the
    first job queued, so a process that queues nothing opens no queue)."""
    ctx = build_context(values, clock=clock)
    ctx.enqueue = lambda inbox_id, **kw: queue(values).enqueue_submission(inbox_id, **kw)
    ctx.run_soon = lambda name: queue(values).run_soon(name)
    return ctx


def worker_context():
    """The worker's Context: from the environment, like the huey instance it runs. The worker
    may wait longer for the database than a web request (WORKER_DATABASE_WAIT_SECONDS)."""
    values = settings_module.load()
    return context({**values, "DATABASE_WAIT_SECONDS": values["WORKER_DATABASE_WAIT_SECONDS"]})


tasks.install_context_factory(worker_context)


def __getattr__(name: str):
    # `huey_consumer peerline_root.huey` reads this attribute: the queue of the environment.
    if name == "huey":
        return queue().huey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
