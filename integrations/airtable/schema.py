"""The tables of docs/architecture.md section 6 as Airtable holds them, derived from the field
declarations of workflows/model.py: field types, the upsert keys, and the conversion of values
between the dataclasses and cells."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone

from pyairtable.utils import datetime_from_iso_str, datetime_to_iso_str

from workflows.model import (Case, Event, Flyer, MessageRecord, Resource, Reviewer, Shown, Supporter, link_ids,
                             shown_fields)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    options: dict | None = None
    link_to: str = ""       # table name, for multipleRecordLinks


CASES, SUPPORTERS, REVIEWERS, RESOURCES, MESSAGES, EVENTS, FLYERS = (
    "Cases", "Supporters", "Reviewers", "Resources", "Messages", "Events", "Flyers")

#: The model's classes and their tables, in the order `airtable init` creates them, so that a
#: link always points at a table made before it.
TABLES = {Supporter: SUPPORTERS, Reviewer: REVIEWERS, Resource: RESOURCES, Case: CASES,
          MessageRecord: MESSAGES, Event: EVENTS, Flyer: FLYERS}

#: The model's kinds of value (workflows/model.py KINDS) as Airtable field types.
TYPES = {"text": "singleLineText", "long_text": "multilineText", "phone": "phoneNumber", "email": "email",
         "url": "url", "choice": "singleSelect", "flag": "checkbox", "number": "number",
         "time": "dateTime", "link": "multipleRecordLinks"}


def field_spec(shown: Shown) -> FieldSpec:
    """One field as Airtable holds it. A dateTime's options (the display time zone) are
    filled in at init."""
    kind = shown.kind
    if kind == "choice":
        return FieldSpec(shown.name, TYPES[kind], {"choices": [{"name": c} for c in shown.choices]})
    if kind == "flag":
        return FieldSpec(shown.name, TYPES[kind], {"icon": "check", "color": "greenBright"})
    if kind == "number":
        return FieldSpec(shown.name, TYPES[kind], {"precision": 0})
    if kind == "link":
        table = next(t for cls, t in TABLES.items() if cls.__name__ == shown.links_to)
        return FieldSpec(shown.name, TYPES[kind], link_to=table)
    return FieldSpec(shown.name, TYPES[kind])


#: Table name -> fields, the first being the primary field.
SCHEMA: dict[str, list[FieldSpec]] = {
    table: [field_spec(s) for s in shown_fields(cls).values()] for cls, table in TABLES.items()}
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
        return link_ids(value)
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
        return ",".join(raw) if raw else ""
    return raw if raw is not None else ""


def _fields_of(obj, names: dict, table: str) -> dict:
    specs = SPECS[table]
    return {display: _to_cell(specs[display], getattr(obj, attr)) for attr, display in names.items()}


def _object_from(record: dict, cls, names: dict, table: str):
    specs, cells = SPECS[table], record.get("fields", {})
    values = {attr: _from_cell(specs[display], cells.get(display)) for attr, display in names.items()}
    return cls(**values, record_id=record["id"])
