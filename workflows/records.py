"""Rows of the service's own database as plain dataclasses, the shapes workflows receive from
`ctx.db` (integrations/database builds them; workflows never import it).

Fields are the tables' columns. Text a person wrote or contact details stay out of `repr`, so a
row that ends up in a log or an error message carries ids and states only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime


def from_row(cls, row):
    """Build `cls` from a result mapping, ignoring columns the dataclass does not name."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in dict(row).items() if key in names})


@dataclass
class InboxRow:
    """A received submission. `payload` (the ids or answers as received) is loaded only by
    `Database.inbox_row`; listings leave it None."""
    id: int
    source: str
    source_key: str
    received_at: datetime
    status: str
    attempts: int = 0
    last_error: str = ""
    case_id: str = ""
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    updated_at: datetime | None = None
    priority: str = "routine"           # the queue lane: routine, unread (answers not yet read), crisis
    queued_at: datetime | None = None
    payload: dict | None = field(default=None, repr=False)


#: The status of an offers row for a supporter a coordinator put in Assigned Supporter by hand
#: (Airtable): never asked by Peerline, but holding the case, so it counts for them
#: (workflows/followup.py). Not an offer anyone answers: SMS replies skip it.
BY_HAND = "by hand"
#: The statuses of an offers row through which a supporter took the case.
TAKEN = ("accepted", BY_HAND)


@dataclass
class Offer:
    """One offer of a case to a supporter (status: open, accepted, declined, expired,
    unreachable, withdrawn, no_contact; or BY_HAND)."""
    id: int
    case_id: str
    round: int
    supporter_id: str
    status: str
    offered_at: datetime
    expires_at: datetime
    answered_at: datetime | None = None


@dataclass
class LedgerRow:
    """One message of the ledger (the `messages` table): intent, claim, delivery. It holds the
    template's name and its placeholder values, never the text."""
    key: str
    case_id: str
    kind: str
    channel: str
    recipient_role: str
    recipient: str = field(repr=False)
    status: str
    created_at: datetime
    provider_id: str = ""
    sent_at: datetime | None = None
    error: str = ""
    claimed_until: datetime | None = None
    template: str = ""
    values_json: str = field(default="{}", repr=False)
    crisis: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = None
    body_digest: str = ""
    alerted: bool = False
    mirror_due: bool = False


@dataclass
class OutboxMessage:
    """A message the embedded provider (the outbox) has 'sent', as `flask outbox` shows it."""
    id: int
    message_key: str
    at: datetime
    channel: str
    recipient: str = field(repr=False)
    case_id: str
    subject: str = field(repr=False)
    body: str = field(repr=False)


@dataclass
class StaffAccount:
    """A staff account of the console (coordinator or program lead). `institutions` is the
    space-separated list of program.toml codes; `password_hash` is a Werkzeug hash."""
    id: int
    email: str
    name: str
    role: str
    institutions: str
    password_hash: str = field(repr=False)
    disabled: bool
    created_at: datetime
