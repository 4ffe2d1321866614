"""What `GET /metrics` shows the operator's Prometheus: counts and ids only, never a payload,
a name or a phone number (docs/architecture.md section 4; issue 15).

Two kinds of figure:

- counters kept as things happen (webhooks answered, signatures refused, Airtable requests and
  429s). Under gunicorn, set PROMETHEUS_MULTIPROC_DIR to an empty directory, the same for every
  web process (and the worker, whose Airtable calls are counted), cleared at each deploy: each
  process then writes its counts there and `/metrics` adds them up (prometheus-client's
  multiprocess mode). Without it, each process shows only its own counts.
- figures read from the database when scraped (inbox unfinished and parked, age of the oldest
  unfinished submission, messages by channel and status): the same from every process.

Shared plumbing like `_webhooks.py`, so every integration may count through it.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from workflows.context import Context

log = logging.getLogger("peerline.metrics")

WEBHOOKS = Counter("peerline_webhooks", "Webhook requests answered, by source system and HTTP status",
                   ["source", "status"])
SIGNATURE_FAILURES = Counter("peerline_webhook_signature_failures",
                             "Webhook requests refused for a missing or wrong signature or token, by route",
                             ["route"])
AIRTABLE_REQUESTS = Counter("peerline_airtable_requests", "Requests sent to Airtable, by HTTP status",
                            ["status"])


def count_webhook(source: str, status: int) -> None:
    WEBHOOKS.labels(source=source, status=str(status)).inc()


def count_signature_failure(route: str | None) -> None:
    SIGNATURE_FAILURES.labels(route=route or "unknown").inc()


def count_airtable(status: int | str) -> None:
    AIRTABLE_REQUESTS.labels(status=str(status)).inc()


class DatabaseFigures:
    """Read when scraped: the inbox and the message ledger, as counts (and one age)."""

    def __init__(self, ctx: Context, queue_depth=None):
        self.ctx, self.queue_depth = ctx, queue_depth

    def collect(self):
        figures = self.ctx.db.figures()
        by_status, oldest = figures["inbox"], figures["oldest_unfinished"]
        parked = by_status.get("parked", 0)
        open_rows = sum(n for status, n in by_status.items() if status not in ("done", "parked"))
        yield GaugeMetricFamily("peerline_inbox_unfinished", "Submissions recorded but not yet made into a case "
                                "(not parked)", value=open_rows)
        yield GaugeMetricFamily("peerline_inbox_parked", "Submissions parked for a person to fix and replay",
                                value=parked)
        age = (self.ctx.now() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily("peerline_inbox_oldest_unfinished_age_seconds",
                                "Age of the oldest unfinished submission (0 when none)", value=max(age, 0.0))
        family = GaugeMetricFamily("peerline_messages", "Messages in the ledger, by channel and status",
                                   labels=["channel", "status"])
        for (channel, status), n in sorted(figures["messages"].items()):
            family.add_metric([channel, status], n)
        yield family
        if self.queue_depth is not None:
            try:
                depth = self.queue_depth()
            except Exception as exc:
                log.warning("queue depth not read (%s)", type(exc).__name__)
            else:
                yield GaugeMetricFamily("peerline_queue_depth", "Tasks waiting in the queue", value=depth)


def exposition(ctx: Context, queue_depth=None) -> bytes:
    """The text Prometheus scrapes: the counters (added up over processes in multiprocess
    mode) and the database figures."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(DatabaseFigures(ctx, queue_depth))
    return generate_latest(registry)


class _ThisProcess:
    """This process's counters (prometheus-client's default registry)."""

    def collect(self):
        from prometheus_client import REGISTRY
        yield from REGISTRY.collect()
