"""REDCap: a request instrument saved complete becomes a case.

Connect it (README, "REDCap"):
1. Upload config/forms/redcap_data_dictionary.csv to the project (Project Setup > Data
   Dictionary), enable the instrument as a survey, and give a user API Export rights.
2. Set REDCAP_API_URL (the project's API endpoint, e.g. https://redcap.example.edu/api/),
   REDCAP_API_TOKEN, REDCAP_PROJECT_ID and REDCAP_WEBHOOK_TOKEN (a long random string).
3. Project Setup > Additional Customizations > Data Entry Trigger:
   `<PUBLIC_BASE_URL>/webhooks/redcap?token=<REDCAP_WEBHOOK_TOKEN>`. Then `flask --app app redcap check`.

Wire format (sources in tests/fixtures/README.md): the Data Entry Trigger is
a form POST with ids only (project_id, instrument, record, <instrument>_complete, and only
sometimes redcap_event_name, redcap_repeat_instrument, redcap_repeat_instance,
redcap_data_access_group), sent on every page save, with no signature and no retry. We
authenticate by the secret `token` query parameter, accept only REDCAP_PROJECT_ID, act only on
the request instrument saved Complete (2), and the worker re-fetches the record from
REDCAP_API_URL with our own token. The `redcap_url` and `project_url` a payload names are never
called: that would send our token wherever the payload points.

An unconfigured route (no REDCAP_WEBHOOK_TOKEN) answers 404; a wrong token 403.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click
import requests
from flask import Blueprint, current_app, jsonify
from flask.cli import AppGroup

from config import forms
from config.settings import ROOT
from integrations._webhooks import (Ignored, MalformedPayload, Refused, Webhook, record, require_fields,
                                    require_token)
from workflows import form_mapping
from workflows.errors import CredentialsRefused, PermanentError, TransientError
from workflows.intake import FIELD_LABELS
from workflows.records import InboxRow

if TYPE_CHECKING:
    from config.program import Program
    from workflows.context import Context

log = logging.getLogger("peerline.redcap")

SOURCE = "redcap"
FORM_FILE = ROOT / "config" / "forms" / "redcap.toml"
RECORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}")
NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
INSTANCE = re.compile(r"[1-9][0-9]{0,5}")
CODE = re.compile(r"-?\d{1,9}")
CHOICE_TYPES = ("radio", "dropdown", "checkbox", "yesno", "truefalse")

bp = Blueprint("redcap", __name__, url_prefix="/webhooks")


# ---- the webhook (web process: verify, record, enqueue, answer) ----

class DataEntryTrigger(Webhook):
    """POST /webhooks/redcap."""

    system = "redcap"

    def verify(self, ctx: Context, request) -> None:
        require_token(ctx.settings.get("REDCAP_WEBHOOK_TOKEN"), "REDCap")

    def parse(self, ctx: Context, request):
        """The trigger's ids, as the inbox payload; Ignored for any save but the request
        instrument saved Complete."""
        form = request.form
        require_fields(form, "project_id")
        project_id = form["project_id"]
        if project_id != str(ctx.settings.get("REDCAP_PROJECT_ID") or ""):
            log.warning("redcap trigger refused: project is not REDCAP_PROJECT_ID")
            raise Refused("unknown project")
        require_fields(form, "instrument", "record")
        instrument, record_name = form["instrument"], form["record"]
        if not NAME.fullmatch(instrument):
            raise MalformedPayload("instrument", "not a REDCap instrument name")
        if not RECORD.fullmatch(record_name):
            raise MalformedPayload("record", "not a REDCap record name")
        if instrument != request_instrument():
            return Ignored("another instrument of the project")
        complete_field = f"{instrument}_complete"
        require_fields(form, complete_field, allow_empty=True)
        if form[complete_field] != "2":
            return Ignored("a page save, or saved Incomplete/Unverified")
        event = form.get("redcap_event_name", "")
        instance = form.get("redcap_repeat_instance", "")
        repeat_instrument = form.get("redcap_repeat_instrument", "")
        for name, value, pattern in (("redcap_event_name", event, NAME), ("redcap_repeat_instance", instance, INSTANCE),
                                     ("redcap_repeat_instrument", repeat_instrument, NAME)):
            if value and not pattern.fullmatch(value):
                raise MalformedPayload(name, "not a REDCap name or number")
        if _host(form.get("redcap_url", "")) not in ("", _host(ctx.settings.get("REDCAP_API_URL") or "")):
            log.warning("redcap trigger names another REDCap server in redcap_url; it is not called")
        return {"project_id": project_id, "record": record_name, "instrument": instrument, "event": event,
                "repeat_instance": instance, "repeat_instrument": repeat_instrument}

    def dispatch(self, ctx: Context, trigger):
        project_id, event, instance = trigger["project_id"], trigger["event"], trigger["repeat_instance"]
        key = source_key(project_id, trigger["record"], event, instance)
        inbox_id, new = record(ctx, system=self.system, retry_message="could not record the trigger; please save again",
                               source=SOURCE, source_key=key, payload=trigger)
        # A new trigger is in the access log and the inbox already; a sender's repeat is worth a line.
        log.log(logging.DEBUG if new else logging.INFO, "redcap trigger received inbox=%s project=%s new=%s",
                inbox_id, project_id, new)
        return jsonify(status="received")


DataEntryTrigger.route(bp, "/redcap", endpoint="data_entry_trigger")


def source_key(project_id: str, record_name: str, event: str = "", instance: str = "") -> str:
    """The inbox key of one request: the trigger and the catch-up must agree on it."""
    return f"redcap:{project_id}:{record_name}" + (f":{event}:{instance or 1}" if event or instance else "")


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return "?"


# ---- the mapping (config/forms/redcap.toml) ----

def _read_form() -> forms.RedcapForm:
    return forms.load_redcap(FORM_FILE)


def request_instrument() -> str:
    return _read_form().project.instrument


def load_form(program: Program) -> forms.RedcapForm:
    """The answer mapping, checked against Peerline's fields and the program's choices."""
    form = _read_form()
    errors = form_mapping.answer_errors(form, program)
    if errors:
        raise form_mapping.FormConfigError(f"{FORM_FILE}: " + "; ".join(errors))
    return form


def map_row(form: forms.RedcapForm, row: dict) -> tuple[dict, list[str]]:
    """One exported REDCap row (all values strings) -> answers keyed by request field, and
    what could not be read. Problems name the variable and code, never the answer's text."""
    answers, problems = {}, []
    for name, spec in form.answers.items():
        field, choices = spec.field, spec.choices
        label = FIELD_LABELS.get(name, name.replace("_", " ").title())
        if spec.checkbox:
            prefix = f"{field}___"
            codes = [col[len(prefix):] for col, value in row.items() if col.startswith(prefix) and value == "1"]
            if not codes:
                continue
            values = {choices.get(code) for code in codes}
            if None in values:
                bad = next(code for code in codes if code not in choices)
                problems.append(f"{label}: unreadable answer ({prefix}{bad})")
            elif len(values) > 1:
                problems.append(f"{label}: several answers ({field})")
            else:
                answers[name] = values.pop()
            continue
        raw = row.get(field)
        if raw is None or raw == "":
            continue
        if not isinstance(raw, str):
            problems.append(f"{label}: unreadable answer ({field} is not text)")
        elif not choices:
            answers[name] = raw
        elif raw.strip() in choices:
            answers[name] = choices[raw.strip()]
        else:
            shown = raw.strip() if CODE.fullmatch(raw.strip()) else "not a choice code"
            problems.append(f"{label}: unreadable answer ({field} = {shown})")
    return answers, problems


# ---- the worker: fetch the record and map it ----

def _api(ctx_settings: dict, data: dict) -> requests.Response:
    return requests.post(ctx_settings["REDCAP_API_URL"],
                         data={"token": ctx_settings["REDCAP_API_TOKEN"], "format": "json",
                               "returnFormat": "json", **data},
                         headers={"Accept": "application/json"},
                         timeout=float(ctx_settings["OUTSIDE_TIMEOUT_SECONDS"]))


def pick_row(rows: list, payload: dict) -> dict | None:
    """The exported row the trigger was about: a longitudinal or repeating project gives one
    row per event and instance (non-repeating rows have empty repeat columns)."""
    event, instance = payload.get("event", ""), payload.get("repeat_instance", "")
    repeat_instrument = payload.get("repeat_instrument", "")
    for row in rows:
        if not isinstance(row, dict):
            continue
        if event and row.get("redcap_event_name", "") != event:
            continue
        if str(row.get("redcap_repeat_instance", "") or "") != instance:
            continue
        if str(row.get("redcap_repeat_instrument", "") or "") != repeat_instrument:
            continue
        return row
    return None


def fetch_answers(ctx: Context, row: InboxRow) -> tuple[dict, list[str]]:
    """Export the one record (content=record, records[0]=...) from REDCAP_API_URL and map it."""
    payload, settings = row.payload, ctx.settings
    ids = f"project {payload['project_id']} record {payload['record']}"
    if not (settings.get("REDCAP_API_URL") and settings.get("REDCAP_API_TOKEN")):
        raise PermanentError("redcap is not configured (REDCAP_API_URL, REDCAP_API_TOKEN)")
    try:
        form = load_form(ctx.program)
    except form_mapping.FormConfigError as exc:
        raise PermanentError(str(exc)) from None
    query = {"content": "record", "type": "flat", "rawOrLabel": "raw",
             "records[0]": payload["record"], "forms[0]": payload["instrument"]}
    if payload.get("event"):
        query["events[0]"] = payload["event"]
    answer = _api(settings, query)
    status = answer.status_code
    if status == 429 or status >= 500:
        raise TransientError(f"redcap answered HTTP {status} for {ids}")
    if status in (401, 403):
        raise CredentialsRefused(SOURCE, f"redcap refused REDCAP_API_TOKEN (HTTP {status}) for {ids}; "
                                         f"fix the token, then flask inbox replay {row.id}")
    if status != 200:
        raise PermanentError(f"redcap answered HTTP {status} for {ids}")
    try:
        rows = answer.json()
    except ValueError:
        rows = None
    if not isinstance(rows, list):   # REDCap can answer 200 with an HTML or JSON error
        raise TransientError(f"redcap answer for {ids} was not a JSON list of records")
    if not rows:
        raise PermanentError(f"redcap has no {ids} (deleted, or never saved)")
    found = pick_row(rows, payload)
    if found is None:
        raise PermanentError(f"redcap {ids} has no row for event {payload.get('event') or '-'} "
                             f"instance {payload.get('repeat_instance') or '-'}")
    return map_row(form, found)


# ---- the catch-up job: records completed since, whose trigger may never have come ----

#: dateRangeBegin is read in the REDCap server's local time, which we do not know. UTC minus
#: 12 hours is no later than local time anywhere (offsets run from -12 to +14), so asking from
#: there misses nothing; the wider window only repeats records the idempotent intake absorbs.
SERVER_TIME_MARGIN = timedelta(hours=12)


def catch_up(ctx: Context, since: datetime) -> list[tuple[str, dict]] | None:
    """Records of the request instrument saved Complete (2) since `since`: one export,
    content=record with dateRangeBegin, fields the instrument's `_complete` only (REDCap adds
    the record id, the first column, and the event and repeat columns). None when REDCap is
    not configured (no call is made)."""
    settings = ctx.settings
    if not (settings.get("REDCAP_API_URL") and settings.get("REDCAP_API_TOKEN") and settings.get("REDCAP_PROJECT_ID")):
        return None
    project_id, instrument = str(settings["REDCAP_PROJECT_ID"]), request_instrument()
    complete = f"{instrument}_complete"
    begin = (since.astimezone(timezone.utc) - SERVER_TIME_MARGIN).strftime("%Y-%m-%d %H:%M:%S")
    answer = _api(settings, {"content": "record", "type": "flat", "rawOrLabel": "raw",
                             "fields[0]": complete, "dateRangeBegin": begin})
    status = answer.status_code
    if status in (401, 403):
        raise CredentialsRefused(SOURCE, f"redcap refused REDCAP_API_TOKEN (HTTP {status}) for the catch-up export")
    if status != 200:
        raise TransientError(f"redcap answered HTTP {status} for the catch-up export")
    try:
        rows = answer.json()
    except ValueError:
        rows = None
    if not isinstance(rows, list):   # REDCap can answer 200 with an HTML or JSON error
        raise TransientError("redcap catch-up answer was not a JSON list of records")
    found = []
    for row in rows:
        if not isinstance(row, dict) or not row or str(row.get(complete, "")) != "2":
            continue
        record_name = str(next(iter(row.values())))   # the record id is the first column
        event = str(row.get("redcap_event_name", "") or "")
        instance = str(row.get("redcap_repeat_instance", "") or "")
        repeat_instrument = str(row.get("redcap_repeat_instrument", "") or "")
        if not RECORD.fullmatch(record_name) or (event and not NAME.fullmatch(event)) or \
                (instance and not INSTANCE.fullmatch(instance)) or \
                (repeat_instrument and not NAME.fullmatch(repeat_instrument)):
            log.warning("redcap catch-up skipped a row whose ids are not REDCap names")
            continue
        payload = {"project_id": project_id, "record": record_name, "instrument": instrument, "event": event,
                   "repeat_instance": instance, "repeat_instrument": repeat_instrument}
        found.append((source_key(project_id, record_name, event, instance), payload))
    return found


# ---- CLI: flask redcap check ----

cli = AppGroup("redcap", help="The REDCap project (data entry trigger and API).")


def parse_choices(text: str) -> set[str]:
    """Codes of a REDCap choice list: '1, For me | 2, For a colleague'."""
    return {part.split(",", 1)[0].strip() for part in (text or "").split("|") if part.strip()}


def check_metadata(form: dict, metadata: list[dict]) -> list[str]:
    """What in the mapping does not fit the project's data dictionary."""
    instrument = request_instrument()
    by_name = {m.get("field_name"): m for m in metadata if isinstance(m, dict)}
    problems = []
    if not any(m.get("form_name") == instrument for m in by_name.values()):
        problems.append(f"the project has no instrument named {instrument}")
    for name, spec in form.answers.items():
        meta = by_name.get(spec.field)
        if meta is None:
            if not spec.optional:   # an optional question may be left out of a project
                problems.append(f"{spec.field} (for {name}) is not in the project")
            continue
        ftype = meta.get("field_type", "")
        if meta.get("form_name") != instrument:
            problems.append(f"{spec.field} is on instrument {meta.get('form_name')}, not {instrument}")
        if spec.checkbox != (ftype == "checkbox"):
            problems.append(f"{spec.field} is a {ftype} field; set checkbox = "
                            f"{'true' if ftype == 'checkbox' else 'false'} in {FORM_FILE.name}")
        mapped = set(spec.choices)
        if ftype in CHOICE_TYPES and mapped:
            codes = {"1", "0"} if ftype in ("yesno", "truefalse") else parse_choices(
                meta.get("select_choices_or_calculations", ""))
            if mapped - codes:
                problems.append(f"{spec.field}: codes {', '.join(sorted(mapped - codes))} are not choices in REDCap")
            if codes - mapped and ftype != "checkbox":
                problems.append(f"{spec.field}: REDCap choices {', '.join(sorted(codes - mapped))} are not "
                                f"mapped in {FORM_FILE.name} (such answers would need attention)")
    return problems


@cli.command("check")
def check():
    """Check the token, the project id, and that every mapped field exists in the project."""
    ctx = current_app.extensions["peerline"]
    settings = ctx.settings
    missing = [k for k in ("REDCAP_API_URL", "REDCAP_API_TOKEN", "REDCAP_PROJECT_ID") if not settings.get(k)]
    if missing:
        raise click.ClickException(f"Set {', '.join(missing)} first (environment or .env).")
    try:
        form = load_form(ctx.program)
    except form_mapping.FormConfigError as exc:
        raise click.ClickException(str(exc))
    try:
        project, metadata = _api(settings, {"content": "project"}), _api(settings, {"content": "metadata"})
    except requests.RequestException as exc:
        raise click.ClickException(f"Could not reach REDCap at {settings['REDCAP_API_URL']} ({type(exc).__name__}).")
    for answer in (project, metadata):
        if answer.status_code in (401, 403):
            raise click.ClickException(f"REDCap refused REDCAP_API_TOKEN (HTTP {answer.status_code}): check the "
                                       "token and that its user has API Export rights.")
        if answer.status_code != 200:
            raise click.ClickException(f"REDCap answered HTTP {answer.status_code}; is REDCAP_API_URL the API "
                                       "endpoint (ending in /api/)?")
    try:
        info, fields = project.json(), metadata.json()
    except ValueError:
        raise click.ClickException("REDCap did not answer JSON; is REDCAP_API_URL the API endpoint (ending in /api/)?")
    problems = []
    if str(info.get("project_id", "")) != str(settings["REDCAP_PROJECT_ID"]):
        problems.append(f"the token belongs to project {info.get('project_id')}, not REDCAP_PROJECT_ID "
                        f"{settings['REDCAP_PROJECT_ID']}")
    problems += check_metadata(form, fields if isinstance(fields, list) else [])
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) between {FORM_FILE.name} and the REDCap project.")
    click.echo(f"REDCap project {settings['REDCAP_PROJECT_ID']}: token works, instrument {request_instrument()} "
               f"has every mapped field ({len(form.answers)}).")


def init_app(app) -> None:
    """A configured REDCap form must have a mapping that fits the program: stop the start if not."""
    if app.config.get("REDCAP_WEBHOOK_TOKEN") or app.config.get("REDCAP_API_TOKEN"):
        load_form(app.extensions["peerline"].program)
