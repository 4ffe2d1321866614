"""The tables of docs/architecture.md section 6 as Airtable holds them: field types, the upsert
keys, and the conversion of values between the dataclasses of workflows/model.py and cells."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone

from pyairtable.utils import datetime_from_iso_str, datetime_to_iso_str

from workflows.model import CONTACT_CHOICES, FOR_CHOICES, PREFERENCES, STATUSES, URGENCIES

@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    options: dict | None = None
    link_to: str = ""       # table name, for multipleRecordLinks


def _text(name):
    return FieldSpec(name, "singleLineText")


def _long(name):
    return FieldSpec(name, "multilineText")


def _select(name, choices):
    return FieldSpec(name, "singleSelect", {"choices": [{"name": c} for c in choices]})


def _when(name):
    return FieldSpec(name, "dateTime")     # options (display time zone) filled in at init


def _check(name):
    return FieldSpec(name, "checkbox", {"icon": "check", "color": "greenBright"})


def _link(name, table):
    return FieldSpec(name, "multipleRecordLinks", link_to=table)


CASES, SUPPORTERS, REVIEWERS, RESOURCES, MESSAGES, EVENTS = (
    "Cases", "Supporters", "Reviewers", "Resources", "Messages", "Events")

#: Table name -> fields, the first being the primary field. Tables are created in this order,
#: so a link always points at a table made before it.
SCHEMA: dict[str, list[FieldSpec]] = {
    SUPPORTERS: [_text("Name"), FieldSpec("Phone", "phoneNumber"), FieldSpec("Email", "email"),
                 _text("Institution"), _text("Department"), _text("Role"), _text("Specialty"),
                 _check("Active"), FieldSpec("Max Open Cases", "number", {"precision": 0}),
                 _when("Paused Until"), _when("Last Assigned At")],
    REVIEWERS: [_text("Name"), FieldSpec("Phone", "phoneNumber"), FieldSpec("Email", "email"),
                _text("Institution"), _check("On Call"), _check("Program Lead")],
    RESOURCES: [_text("Name"), _text("Institution"), _text("Kind"), FieldSpec("Phone", "phoneNumber"),
                FieldSpec("URL", "url"), _text("Hours")],
    CASES: [_text("Case ID"), _text("Source"), _text("Source Response ID"), _when("Submitted At"),
            _select("Status", STATUSES), _select("Urgency", URGENCIES), _select("For", FOR_CHOICES),
            _text("Requester Name"), FieldSpec("Requester Phone", "phoneNumber"),
            FieldSpec("Requester Email", "email"), _text("Referrer Name"),
            FieldSpec("Referrer Phone", "phoneNumber"), FieldSpec("Referrer Email", "email"),
            _select("Preferred Contact", CONTACT_CHOICES),
            _text("Institution"), _text("Department"), _text("Role"), _text("Specialty"),
            _select("Role Preference", PREFERENCES), _select("Department Preference", PREFERENCES),
            _check("Outside My Institution"), _text("Flyer"), _when("Review Due"),
            _long("Suggested Supporters"), _link("Assigned Supporter", SUPPORTERS),
            _when("Offer Expires"), _when("Contact Made At"), _text("Tier 3 Referral"),
            _when("Closed At"), _when("Survey Sent At"), _when("Purged At"), _long("Problems")],
    MESSAGES: [_text("Key"), _link("Case", CASES), _text("Kind"), _text("Channel"),
               _text("Recipient Role"), _text("Status"), _text("Provider ID"), _when("Sent At"),
               _long("Error")],
    EVENTS: [_text("Event"), _link("Case", CASES), _when("At"), _text("Actor")],
}
SPECS = {table: {spec.name: spec for spec in specs} for table, specs in SCHEMA.items()}
#: Upsert keys: Airtable merges only on text, number, select or date fields, never email/phone.
CASE_KEY = "Source Response ID"
ROSTER_KEYS = ["Name", "Institution"]
MESSAGE_KEY = "Key"


def _to_cell(spec: FieldSpec, value):
    """A Python value as Airtable wants it in that field; None clears the cell."""
    if spec.type == "dateTime":
        return datetime_to_iso_str(value.astimezone(timezone.utc)) if value else None
    if spec.type == "checkbox":
        return bool(value)
    if spec.type == "number":
        return value
    if spec.type == "multipleRecordLinks":
        return [value] if value else []
    return value if value not in (None, "") else None


def _from_cell(spec: FieldSpec, raw):
    """Airtable leaves empty cells out of a record; read them as the SQL store's defaults."""
    if spec.type == "dateTime":
        return datetime_from_iso_str(raw).astimezone(timezone.utc) if raw else None
    if spec.type == "checkbox":
        return bool(raw)
    if spec.type == "number":
        return int(raw) if raw is not None else 0
    if spec.type == "multipleRecordLinks":
        return raw[0] if raw else ""
    return raw if raw is not None else ""


def _fields_of(obj, names: dict, table: str) -> dict:
    specs = SPECS[table]
    return {display: _to_cell(specs[display], getattr(obj, attr)) for attr, display in names.items()}


def _object_from(record: dict, cls, names: dict, table: str):
    specs, cells = SPECS[table], record.get("fields", {})
    values = {attr: _from_cell(specs[display], cells.get(display)) for attr, display in names.items()}
    return cls(**values, record_id=record["id"])
