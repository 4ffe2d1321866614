"""`flask airtable init|check` through Airtable's Metadata API: create the missing tables and
fields of the schema, and report drift from it."""
from __future__ import annotations

from integrations.airtable.schema import SCHEMA, FieldSpec
from integrations.airtable.store import AirtableCaseStore

def _field_json(spec: FieldSpec, tables: dict, time_zone: str) -> dict:
    body: dict = {"name": spec.name, "type": spec.type}
    if spec.type == "dateTime":
        body["options"] = {"dateFormat": {"name": "iso"}, "timeFormat": {"name": "24hour"},
                           "timeZone": time_zone}
    elif spec.type == "multipleRecordLinks":
        body["options"] = {"linkedTableId": tables[spec.link_to]["id"]}
    elif spec.options:
        body["options"] = spec.options
    return body


def _field_problem(table: str, spec: FieldSpec, have: dict, tables: dict) -> str | None:
    where = f"{table}.{spec.name}"
    if have["type"] != spec.type:
        return f"{where} is a {have['type']} field; Peerline needs {spec.type}"
    options = have.get("options") or {}
    if spec.type == "singleSelect":
        missing = [c["name"] for c in spec.options["choices"]
                   if c["name"] not in {x.get("name") for x in options.get("choices", [])}]
        if missing:
            return f"{where} lacks the choices {', '.join(missing)}"
    if spec.type == "multipleRecordLinks":
        target = tables.get(spec.link_to)
        if target and options.get("linkedTableId") != target["id"]:
            return f"{where} links to another table; Peerline needs links to {spec.link_to}"
    return None


def base_tables(store: AirtableCaseStore) -> dict:
    """The base's tables by name, as the Metadata API describes them."""
    data = store.api.get(store.api.base(store.base_id).urls.tables)
    return {t["name"]: t for t in data.get("tables", [])}


def check_base(store: AirtableCaseStore) -> list[str]:
    """What differs from docs/architecture.md section 6: missing tables and fields, wrong types. Fields
    Peerline does not know (coordinators' own) are fine."""
    tables, drift = base_tables(store), []
    for table, specs in SCHEMA.items():
        have = tables.get(table)
        if have is None:
            drift.append(f"missing table {table}")
            continue
        by_name = {f["name"]: f for f in have.get("fields", [])}
        primary = next((f["name"] for f in have.get("fields", []) if f["id"] == have.get("primaryFieldId")), None)
        if primary != specs[0].name:
            drift.append(f"{table}: the primary field is {primary}; Peerline expects {specs[0].name}")
        for spec in specs:
            if spec.name not in by_name:
                drift.append(f"missing field {table}.{spec.name} ({spec.type})")
            elif problem := _field_problem(table, spec, by_name[spec.name], tables):
                drift.append(problem)
    return drift


def init_base(store: AirtableCaseStore, time_zone: str = "utc") -> tuple[list[str], list[str]]:
    """Create the missing tables and fields. Returns (what was created, what could not be)."""
    tables, created, refused = base_tables(store), [], []
    for table, specs in SCHEMA.items():
        have = tables.get(table)
        if have is None:
            fields = [_field_json(s, tables, time_zone) for s in specs]
            tables[table] = store.api.post(store.api.base(store.base_id).urls.tables,
                                           json={"name": table, "fields": fields})
            created.append(f"table {table} ({len(fields)} fields)")
            continue
        by_name = {f["name"]: f for f in have.get("fields", [])}
        for spec in specs:
            if spec.name in by_name:
                if problem := _field_problem(table, spec, by_name[spec.name], tables):
                    refused.append(problem)
                continue
            if spec.link_to and spec.link_to not in tables:
                refused.append(f"{table}.{spec.name}: table {spec.link_to} is missing")
                continue
            url = store.api.table(store.base_id, have["id"]).urls.fields
            have.setdefault("fields", []).append(
                store.api.post(url, json=_field_json(spec, tables, time_zone)))
            created.append(f"field {table}.{spec.name}")
    return created, refused
