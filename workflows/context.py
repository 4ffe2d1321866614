"""Everything a workflow step needs, built once per process by the composition root
(`peerline_root.context`, through `integrations.build_context`).

Workflows receive this object instead of reaching for Flask globals, so the same code runs
in the web process, the worker and the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Protocol

from config.messages import Templates
from config.program import Program
from workflows.clock import Clock
from workflows.model import CaseStore


class Sender(Protocol):
    """An SMS or email provider (the outbox, Twilio, SendGrid)."""

    def send(self, *, message_key: str, channel: str, to: str, case_id: str,
             subject: str, body: str) -> str:
        """Hand the message over; return the provider's id for it."""

    def find_sent(self, *, message_key: str, channel: str, to: str) -> str | None:
        """The provider id of an earlier send of this message, if the provider can tell."""


@dataclass
class Context:
    settings: dict[str, str | None]
    program: Program
    templates: Templates
    #: The service's own database (integrations.database.Database, handed in by the root;
    #: workflows do not import integrations, so it is not named here).
    db: Any
    store: CaseStore
    senders: dict[str, Sender]          # channel ("sms", "email") -> Sender
    #: Queue an inbox row for the worker; the root connects it to the queue. Unconnected, nothing
    #: is queued and the periodic sweep picks the row up.
    enqueue: Callable[..., None] = lambda inbox_id, **_: None
    #: source -> callable(ctx, row) -> answers
    fetchers: dict[str, Callable[[Context, dict], dict]] = field(default_factory=dict)
    #: source -> callable(ctx, since) -> [(source_key, payload), ...] completed since `since`,
    #: or None when the source is not configured (workflows/catchup.py).
    catchups: dict[str, Callable[..., list | None]] = field(default_factory=dict)
    #: Queue a named worker job now (workflows.tasks.Queue.run_soon, connected by the root), e.g.
    #: "poll_approvals" when an Airtable webhook pings. Tests replace it to see what was queued.
    #: Unconnected, nothing is queued and the job's periodic run does the work.
    run_soon: Callable[[str], None] = lambda name: None
    #: The one clock, shared with `db` (build_context hands the same object to both).
    clock: Clock = field(default_factory=Clock)

    def now(self) -> datetime:
        return self.clock.now()
