"""The program's nouns as plain dataclasses, and the case-store interface both backends keep.

Each field is declared once, here: its Python name (snake_case, also the SQL store's column),
its type, its default, and with `shown(...)` how coordinators see it (docs/architecture.md
section 6): the field name in Airtable and the kind of value, in our own words (`KINDS`),
which `integrations/airtable/schema.py` turns into Airtable's types. `shown_fields(cls)` and
the `*_FIELDS` maps (Python name -> field name) are derived from these declarations.
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

#: Kinds of value a field holds: one line of text, several lines, a phone number, an email
#: address, a web address, one of `choices`, yes/no, a whole number, a moment in time, and
#: a link to a record of `links_to` (the field holds that record's id).
KINDS = ("text", "long_text", "phone", "email", "url", "choice", "flag", "number", "time", "link")
_EMPTY = {"flag": False, "number": 0, "time": None}


@dataclass(frozen=True)
class Shown:
    """How a field shows to coordinators: its name there and the kind of value it holds."""
    name: str
    kind: str = "text"
    choices: tuple[str, ...] = ()
    links_to: str = ""          # a class name of this module, for kind "link"
    primary: bool = False       # the field that names a record (the first column)


def shown(name: str, kind: str = "text", *, default=None, required: bool = False,
          choices: tuple[str, ...] = (), links_to: str = "", primary: bool = False):
    """A dataclass field shown to coordinators as `name`. Its default is the kind's empty
    value ("" , False, 0 or None) unless `default` is given; `required` means no default."""
    if kind not in KINDS:
        raise ValueError(f"{name}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
    if (kind == "choice") != bool(choices) or (kind == "link") != bool(links_to):
        raise ValueError(f"{name}: choices go with kind 'choice', links_to with kind 'link'")
    metadata = {"shown": Shown(name, kind, tuple(choices), links_to, primary)}
    if required:
        return field(metadata=metadata)
    return field(default=_EMPTY.get(kind, "") if default is None else default, metadata=metadata)


def link_ids(value: str) -> list[str]:
    """The record ids a link field holds ("" -> [], "rec1,rec2" -> ["rec1", "rec2"])."""
    return [part for part in (value or "").split(",") if part]


#: The backend's own id for a row (Airtable `rec...`, SQL primary key); not a field.
RECORD_ID = "record_id"


def shown_fields(cls) -> dict[str, Shown]:
    """Python name -> how it shows, the primary field first, then in declaration order."""
    found = {}
    for f in dataclasses.fields(cls):
        if f.name == RECORD_ID:
            continue
        if "shown" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with shown(...)")
        found[f.name] = f.metadata["shown"]
    return dict(sorted(found.items(), key=lambda item: not item[1].primary))


def field_names(cls) -> dict[str, str]:
    """Python name -> the field name coordinators see."""
    return {attr: s.name for attr, s in shown_fields(cls).items()}


@dataclass
class Request:
    """What a requester asked for, mapped from any form. Empty string: not answered."""
    urgency: str = shown("Urgency", "choice", choices=URGENCIES, default="Routine")
    for_whom: str = shown("For", "choice", choices=FOR_CHOICES)
    requester_name: str = shown("Requester Name")
    requester_phone: str = shown("Requester Phone", "phone")
    requester_email: str = shown("Requester Email", "email")
    #: For a colleague referral: who referred them, so a coordinator can check back with them.
    referrer_name: str = shown("Referrer Name")
    referrer_phone: str = shown("Referrer Phone", "phone")
    referrer_email: str = shown("Referrer Email", "email")
    preferred_contact: str = shown("Preferred Contact", "choice", choices=CONTACT_CHOICES)
    institution: str = shown("Institution")
    department: str = shown("Department")
    role: str = shown("Role")
    specialty: str = shown("Specialty")
    role_preference: str = shown("Role Preference", "choice", choices=PREFERENCES, default="Any")
    department_preference: str = shown("Department Preference", "choice", choices=PREFERENCES, default="Any")
    outside_my_institution: bool = shown("Outside My Institution", "flag")
    flyer: str = shown("Flyer")


@dataclass
class _CaseHead:
    """The fields a case starts with. `Case` names this class after `Request` so that these
    come first (a dataclass lays out its bases' fields from the last base to the first) and
    the Cases table reads in the order of docs/architecture.md section 6."""
    case_id: str = shown("Case ID", primary=True)
    source: str = shown("Source")
    source_response_id: str = shown("Source Response ID")
    submitted_at: datetime | None = shown("Submitted At", "time")
    status: str = shown("Status", "choice", choices=STATUSES, default="New")


@dataclass
class Case(Request, _CaseHead):
    review_due: datetime | None = shown("Review Due", "time")
    suggested_supporters: str = shown("Suggested Supporters", "long_text")
    assigned_supporter: str = shown("Assigned Supporter", "link", links_to="Supporter")
    offer_expires: datetime | None = shown("Offer Expires", "time")
    contact_made_at: datetime | None = shown("Contact Made At", "time")
    #: The third-tier Resources the requester was referred to: their record ids, joined by ","
    #: (in Airtable, a link to Resources that may hold several).
    tier3_referral: str = shown("Tier 3 Referral", "link", links_to="Resource")
    closed_at: datetime | None = shown("Closed At", "time")
    survey_sent_at: datetime | None = shown("Survey Sent At", "time")
    purged_at: datetime | None = shown("Purged At", "time")
    #: What could not be read from the form, never the answer itself.
    problems: str = shown("Problems", "long_text")
    record_id: str = ""

    @property
    def ref(self) -> str:
        """The short reference used in SMS: `PS-4821` -> `4821`."""
        return self.case_id.rsplit("-", 1)[-1]


@dataclass
class Supporter:
    name: str = shown("Name", required=True, primary=True)
    phone: str = shown("Phone", "phone")
    email: str = shown("Email", "email")
    institution: str = shown("Institution")
    department: str = shown("Department")
    role: str = shown("Role")
    specialty: str = shown("Specialty")
    active: bool = shown("Active", "flag", default=True)
    max_open_cases: int = shown("Max Open Cases", "number", default=2)
    paused_until: datetime | None = shown("Paused Until", "time")
    last_assigned_at: datetime | None = shown("Last Assigned At", "time")
    record_id: str = ""


@dataclass
class Reviewer:
    name: str = shown("Name", required=True, primary=True)
    phone: str = shown("Phone", "phone")
    email: str = shown("Email", "email")
    institution: str = shown("Institution")
    on_call: bool = shown("On Call", "flag")
    program_lead: bool = shown("Program Lead", "flag")
    record_id: str = ""


@dataclass
class Resource:
    name: str = shown("Name", required=True, primary=True)
    institution: str = shown("Institution")
    kind: str = shown("Kind")
    phone: str = shown("Phone", "phone")
    url: str = shown("URL", "url")
    hours: str = shown("Hours")
    record_id: str = ""


@dataclass
class Event:
    """One line of a case's audit trail. `event` is a fixed phrase, never request text."""
    case_id: str = shown("Case", "link", links_to="Case", required=True)
    event: str = shown("Event", required=True, primary=True)
    at: datetime = shown("At", "time", required=True)
    actor: str = shown("Actor", default="peerline")


@dataclass
class MessageRecord:
    """One message in the exactly-once ledger. Holds no message text."""
    key: str = shown("Key", required=True, primary=True)
    case_id: str = shown("Case", "link", links_to="Case", required=True)
    kind: str = shown("Kind", required=True)
    channel: str = shown("Channel", required=True)
    recipient_role: str = shown("Recipient Role", required=True)
    status: str = shown("Status", default="pending")
    provider_id: str = shown("Provider ID")
    sent_at: datetime | None = shown("Sent At", "time")
    error: str = shown("Error", "long_text")


#: The forms a flyer can open (docs/architecture.md section 6, Flyers).
FLYER_FORMS = ("Built-in", "Qualtrics", "REDCap")


@dataclass
class Flyer:
    """A printed flyer: its tag (in the QR code's link, `/f/<tag>`), where it hangs, and the
    form its QR code opens. Scans are counted per tag and day in our own database only."""
    tag: str = shown("Tag", required=True, primary=True)
    institution: str = shown("Institution")
    unit: str = shown("Unit")
    form: str = shown("Form", "choice", choices=FLYER_FORMS, default="Built-in")
    link: str = shown("Link", "url")
    created_at: datetime | None = shown("Created At", "time")
    record_id: str = ""


CASE_FIELDS = field_names(Case)
SUPPORTER_FIELDS = field_names(Supporter)
REVIEWER_FIELDS = field_names(Reviewer)
RESOURCE_FIELDS = field_names(Resource)
MESSAGE_FIELDS = field_names(MessageRecord)
EVENT_FIELDS = field_names(Event)
FLYER_FIELDS = field_names(Flyer)


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

    def create_case(self, case: Case, *, unseen: bool = False) -> Case:
        """Create, or return the existing case with the same Source Response ID unchanged.
        `unseen`: the caller knows no case was ever made from this Source Response ID (our
        database assigned its Case ID just now), so a store need not look for one first."""

    def update_case(self, case_id: str, **changes) -> Case: ...

    def list_cases(self, status: str | None = None) -> list[Case]: ...

    def cases_changed_since(self, since: datetime | None) -> list[Case]:
        """At least every case made or changed after `since` (every case when None): what the
        store-changes poll (workflows/watch.py) reads instead of every case."""

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

    def case_records(self, case_id: str) -> list[str]:
        """The backend's record ids holding this Case ID (the purge notes them first)."""

    def replace_case(self, kept: Case, old_records: list[str] | None = None) -> int:
        """The purge (workflows/purge.py): the case becomes `kept`, its de-identified fields,
        so that no earlier value survives in the backend (Airtable: delete and write anew).
        Safe to run again after a crash. Returns how many records or fields were removed."""

    def create_flyer(self, flyer: Flyer) -> Flyer:
        """Add a flyer; raise `FlyerExists` when its tag is taken (the caller picks another)."""

    def flyers(self) -> list[Flyer]:
        """Every flyer, oldest first."""

    def find_flyer(self, tag: str) -> Flyer | None: ...


class FlyerExists(ValueError):
    """A flyer with this tag is already in the case store."""


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
