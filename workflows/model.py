"""The program's nouns as plain dataclasses, and the case-store interface both backends keep.

Python names are snake_case; `*_FIELDS` maps each to the field name coordinators see in
Airtable (docs/architecture.md section 6). The SQL store uses the Python names as column names.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from config.vocabulary import CONTACT_CHOICES, FOR_CHOICES, PREFERENCES, URGENCIES  # noqa: F401 (re-exported)

STATUSES = ("New", "Needs attention", "Approved", "Offered", "Assigned", "Contacted",
            "Referred", "Closed", "Withdrawn")
OPEN_STATUSES = ("New", "Needs attention", "Approved", "Offered", "Assigned", "Contacted", "Referred")


@dataclass
class Request:
    """What a requester asked for, mapped from any form. Empty string: not answered."""
    for_whom: str = ""
    requester_name: str = ""
    requester_phone: str = ""
    requester_email: str = ""
    #: For a colleague referral: who referred them, so a coordinator can check back with them.
    referrer_name: str = ""
    referrer_phone: str = ""
    referrer_email: str = ""
    preferred_contact: str = ""
    institution: str = ""
    department: str = ""
    role: str = ""
    specialty: str = ""
    role_preference: str = "Any"
    department_preference: str = "Any"
    outside_my_institution: bool = False
    urgency: str = "Routine"
    flyer: str = ""


@dataclass
class Case(Request):
    case_id: str = ""
    source: str = ""
    source_response_id: str = ""
    submitted_at: datetime | None = None
    status: str = "New"
    review_due: datetime | None = None
    suggested_supporters: str = ""
    assigned_supporter: str = ""
    offer_expires: datetime | None = None
    contact_made_at: datetime | None = None
    tier3_referral: str = ""
    closed_at: datetime | None = None
    survey_sent_at: datetime | None = None
    purged_at: datetime | None = None
    problems: str = ""
    #: The backend's own id for the row (Airtable `rec...`, SQL primary key); not a field.
    record_id: str = ""

    @property
    def ref(self) -> str:
        """The short reference used in SMS: `PS-4821` -> `4821`."""
        return self.case_id.rsplit("-", 1)[-1]


CASE_FIELDS = {
    "case_id": "Case ID", "source": "Source", "source_response_id": "Source Response ID",
    "submitted_at": "Submitted At", "status": "Status", "urgency": "Urgency", "for_whom": "For",
    "requester_name": "Requester Name", "requester_phone": "Requester Phone",
    "requester_email": "Requester Email", "referrer_name": "Referrer Name",
    "referrer_phone": "Referrer Phone", "referrer_email": "Referrer Email",
    "preferred_contact": "Preferred Contact",
    "institution": "Institution", "department": "Department", "role": "Role", "specialty": "Specialty",
    "role_preference": "Role Preference", "department_preference": "Department Preference",
    "outside_my_institution": "Outside My Institution", "flyer": "Flyer", "review_due": "Review Due",
    "suggested_supporters": "Suggested Supporters", "assigned_supporter": "Assigned Supporter",
    "offer_expires": "Offer Expires", "contact_made_at": "Contact Made At",
    "tier3_referral": "Tier 3 Referral", "closed_at": "Closed At", "survey_sent_at": "Survey Sent At",
    "purged_at": "Purged At", "problems": "Problems",
}


@dataclass
class Supporter:
    name: str
    phone: str = ""
    email: str = ""
    institution: str = ""
    department: str = ""
    role: str = ""
    specialty: str = ""
    active: bool = True
    max_open_cases: int = 2
    paused_until: datetime | None = None
    last_assigned_at: datetime | None = None
    record_id: str = ""


SUPPORTER_FIELDS = {
    "name": "Name", "phone": "Phone", "email": "Email", "institution": "Institution",
    "department": "Department", "role": "Role", "specialty": "Specialty", "active": "Active",
    "max_open_cases": "Max Open Cases", "paused_until": "Paused Until",
    "last_assigned_at": "Last Assigned At",
}


@dataclass
class Reviewer:
    name: str
    phone: str = ""
    email: str = ""
    institution: str = ""
    on_call: bool = False
    program_lead: bool = False
    record_id: str = ""


REVIEWER_FIELDS = {
    "name": "Name", "phone": "Phone", "email": "Email", "institution": "Institution",
    "on_call": "On Call", "program_lead": "Program Lead",
}


@dataclass
class Resource:
    name: str
    institution: str = ""
    kind: str = ""
    phone: str = ""
    url: str = ""
    hours: str = ""
    record_id: str = ""


RESOURCE_FIELDS = {
    "name": "Name", "institution": "Institution", "kind": "Kind", "phone": "Phone",
    "url": "URL", "hours": "Hours",
}


@dataclass
class Event:
    """One line of a case's audit trail. `event` is a fixed phrase, never request text."""
    case_id: str
    event: str
    at: datetime
    actor: str = "peerline"


@dataclass
class MessageRecord:
    """One message in the exactly-once ledger. Holds no message text."""
    key: str
    case_id: str
    kind: str
    channel: str
    recipient_role: str
    status: str = "pending"
    provider_id: str = ""
    sent_at: datetime | None = None
    error: str = ""


MESSAGE_FIELDS = {
    "key": "Key", "case_id": "Case", "kind": "Kind", "channel": "Channel",
    "recipient_role": "Recipient Role", "status": "Status", "provider_id": "Provider ID",
    "sent_at": "Sent At", "error": "Error",
}


@dataclass
class Roster:
    supporters: list[Supporter] = field(default_factory=list)
    reviewers: list[Reviewer] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)


class CaseStore(Protocol):
    """What workflows need of a case store. Kept by `integrations.database.SqlCaseStore`
    and `integrations.airtable.AirtableCaseStore`; one contract test suite runs on both."""

    def find_case(self, *, case_id: str | None = None,
                  source_response_id: str | None = None) -> Case | None: ...

    def create_case(self, case: Case) -> Case:
        """Create, or return the existing case with the same Source Response ID unchanged."""

    def update_case(self, case_id: str, **changes) -> Case: ...

    def list_cases(self, status: str | None = None) -> list[Case]: ...

    def add_events(self, events: list[Event]) -> None: ...

    def list_events(self, case_id: str) -> list[Event]: ...

    def supporters(self) -> list[Supporter]: ...

    def reviewers(self) -> list[Reviewer]: ...

    def resources(self) -> list[Resource]: ...

    def update_supporter(self, record_id: str, **changes) -> Supporter:
        """Change a supporter's fields (e.g. Last Assigned At when they accept a case)."""

    def import_roster(self, roster: Roster) -> dict:
        """Upsert people and resources (key: Name + Institution); return counts."""

    def roster_is_empty(self) -> bool: ...

    def mirror_messages(self, records: list[MessageRecord]) -> None:
        """Show ledger rows to coordinators (Airtable Messages table); SQL needs nothing."""


def to_fields(obj, names: dict) -> dict:
    """Dataclass -> {Display Name: value} for the names given."""
    return {display: getattr(obj, attr) for attr, display in names.items()}


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
