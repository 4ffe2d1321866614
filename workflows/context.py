"""Everything a workflow step needs, built once per process by `integrations.build_context`.

Workflows receive this object instead of reaching for Flask globals, so the same code runs
in the web process, the worker and the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Protocol

from config.messages import Templates
from config.program import Program
from workflows.clock import Clock
from workflows.model import CaseStore

if TYPE_CHECKING:
    # For type checkers only: workflows never import integrations at run time.
    from integrations.database import Database


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
    db: Database
    store: CaseStore
    senders: dict[str, Sender]          # channel ("sms", "email") -> Sender
    enqueue: Callable[..., None] = lambda inbox_id, **_: None
    #: source -> callable(ctx, row) -> answers
    fetchers: dict[str, Callable[[Context, dict], dict]] = field(default_factory=dict)
    #: Queue a named worker job now (workflows.tasks.run_soon), e.g. "poll_approvals" when an
    #: Airtable webhook pings. Tests replace it to see what was queued.
    run_soon: Callable[[str], None] = lambda name: _run_soon(name)
    #: The one clock, shared with `db` (build_context hands the same object to both).
    clock: Clock = field(default_factory=Clock)

    def now(self) -> datetime:
        return self.clock.now()


def _run_soon(name: str) -> None:
    from workflows import tasks
    tasks.run_soon(name)
