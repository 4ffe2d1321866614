"""Qualtrics: a completed survey response becomes a case.

Connect it (README, "Qualtrics"):
1. Build the survey from the question list in the README, or point `config/forms/qualtrics.toml`
   at your own question ids; put the survey's SV_ id in its `[survey] ids`.
2. Set QUALTRICS_API_URL (your datacenter, e.g. https://iad1.qualtrics.com),
   QUALTRICS_API_TOKEN, QUALTRICS_WEBHOOK_TOKEN (a long random string) and PUBLIC_BASE_URL.
3. Run `flask --app app qualtrics subscribe --survey SV_...` (a brand administrator's token).

Wire format (sources in tests/fixtures/README.md): the event subscription POSTs a form-encoded
notice holding ids only, either as plain fields (Topic, Status, SurveyID, ResponseID, ...) or,
when the subscription has a shared key, as Topic + HMAC + MSG (MSG a JSON string). Topic is
prefixed with the brand id. We authenticate the notice by the secret `token` query parameter
only: how Qualtrics computes HMAC is not documented anywhere we could confirm, so it is not
checked. The notice is only a hint: the worker fetches the response with our own API token,
so a forged notice can at most ask us to read a response that exists in our own survey.

An unconfigured route (no QUALTRICS_WEBHOOK_TOKEN) answers 404; a wrong token 403.
"""
from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import click
import requests
from flask import Blueprint, current_app, jsonify
from flask.cli import AppGroup

from config import forms
from config.settings import ROOT
from integrations._webhooks import (Ignored, MalformedPayload, Refused, Webhook, parse_json, record,
                                    require_token)
from workflows import form_mapping
from workflows.errors import CredentialsRefused, PermanentError, TransientError
from workflows.intake import FIELD_LABELS
from workflows.records import InboxRow

if TYPE_CHECKING:
    from config.program import Program
    from workflows.context import Context

log = logging.getLogger("peerline.qualtrics")

SOURCE = "qualtrics"
FORM_FILE = ROOT / "config" / "forms" / "qualtrics.toml"
COMPLETED_TOPIC = re.compile(r"(?:^|\.)surveyengine\.completedResponse\.(SV_[A-Za-z0-9]{1,40})$")
RESPONSE_ID = re.compile(r"R_[A-Za-z0-9]{1,40}")
SURVEY_ID = re.compile(r"SV_[A-Za-z0-9]{1,40}")
CODE = re.compile(r"-?\d{1,9}")

bp = Blueprint("qualtrics", __name__, url_prefix="/webhooks")


# ---- the webhook (web process: verify, record, enqueue, answer) ----

class Notice(Webhook):
    """POST /webhooks/qualtrics (and the GET probe some Qualtrics set-ups send)."""

    system = "qualtrics"

    def verify(self, ctx: Context, request) -> None:
        require_token(ctx.settings.get("QUALTRICS_WEBHOOK_TOKEN"), "Qualtrics")

    def parse(self, ctx: Context, request):
        """The notice's ids: {"survey_id", "response_id"}; None for the GET probe."""
        if request.method == "GET":   # some Qualtrics set-ups probe the URL with a GET
            return None
        form = request.form
        topic = form.get("Topic", "")
        if not topic:
            raise MalformedPayload("Topic", "missing")
        fields = form
        if "MSG" in form:   # the shared-key shape: Topic + HMAC + MSG
            fields = parse_json(form["MSG"], "MSG")
            if not isinstance(fields, dict):
                raise MalformedPayload("MSG", "not a JSON object")
        completed = COMPLETED_TOPIC.search(topic)
        if completed is None:   # partial responses and every other topic
            return Ignored("not a completed response")
        topic_survey = completed.group(1)
        response_id, survey_id = fields.get("ResponseID"), fields.get("SurveyID", topic_survey)
        if not response_id:
            raise MalformedPayload("ResponseID", "missing")
        if not isinstance(response_id, str) or not RESPONSE_ID.fullmatch(response_id):
            raise MalformedPayload("ResponseID", "not a Qualtrics response id")
        if not isinstance(survey_id, str) or not SURVEY_ID.fullmatch(survey_id):
            raise MalformedPayload("SurveyID", "not a Qualtrics survey id")
        if survey_id != topic_survey:
            raise MalformedPayload("SurveyID", "does not match Topic")
        if survey_id not in survey_ids():
            log.warning("qualtrics notice refused: survey %s is not in %s", survey_id, FORM_FILE.name)
            raise Refused("unknown survey")
        return {"survey_id": survey_id, "response_id": response_id}

    def dispatch(self, ctx: Context, notice):
        if notice is None:
            return jsonify(status="ok")
        response_id = notice["response_id"]
        inbox_id, new = record(ctx, system=self.system, retry_message="could not record the notice; please retry",
                               source=SOURCE, source_key=source_key(response_id), payload=notice)
        # A new notice is in the access log and the inbox already; a sender's repeat is worth a line.
        log.log(logging.DEBUG if new else logging.INFO, "qualtrics notice received inbox=%s response=%s new=%s",
                inbox_id, response_id, new)
        return jsonify(status="received")


def source_key(response_id: str) -> str:
    """The inbox key of one response: the notice and the catch-up must agree on it."""
    return f"qualtrics:{response_id}"


Notice.route(bp, "/qualtrics", endpoint="notice", methods=("GET", "POST"))


# ---- the mapping (config/forms/qualtrics.toml) ----

def _read_form() -> forms.QualtricsForm:
    return forms.load_qualtrics(FORM_FILE)


def survey_ids() -> list[str]:
    return list(_read_form().survey.ids)


def load_form(program: Program) -> forms.QualtricsForm:
    """The answer mapping, checked against Peerline's fields and the program's choices."""
    form = _read_form()
    errors = form_mapping.answer_errors(form, program)
    if errors:
        raise form_mapping.FormConfigError(f"{FORM_FILE}: " + "; ".join(errors))
    return form


def _code(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def map_values(form: forms.QualtricsForm, values: dict) -> tuple[dict, list[str]]:
    """Response `values` -> answers keyed by request field, and what could not be read.
    Problems name the question and, for a choice, its code: never the answer's text."""
    answers, problems = {}, []
    for name, spec in form.answers.items():
        key, choices = spec.question, spec.choices
        raw = values.get(key)
        if raw is None or raw == "" or raw == []:
            continue
        label = FIELD_LABELS.get(name, name.replace("_", " ").title())
        if not choices:
            if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
                answers[name] = raw if isinstance(raw, str) else _code(raw)
            else:
                problems.append(f"{label}: unreadable answer ({key} is not text)")
            continue
        codes = [_code(c) for c in (raw if isinstance(raw, list) else [raw])]
        if len(codes) > 1:
            problems.append(f"{label}: several answers ({key})")
        elif codes[0] not in choices:
            shown = codes[0] if CODE.fullmatch(codes[0]) else "not a choice code"
            problems.append(f"{label}: unreadable answer ({key} = {shown})")
        else:
            answers[name] = choices[codes[0]]
    return answers, problems


# ---- the worker: fetch the response and map it ----

def api_base(settings: dict) -> str:
    base = (settings.get("QUALTRICS_API_URL") or "").rstrip("/")
    return base[: -len("/API/v3")] if base.endswith("/API/v3") else base


def _headers(settings: dict) -> dict:
    return {"X-API-TOKEN": settings["QUALTRICS_API_TOKEN"], "Accept": "application/json"}


def fetch_answers(ctx: Context, row: InboxRow) -> tuple[dict, list[str]]:
    """GET /API/v3/surveys/{SurveyID}/responses/{ResponseID}, then map its values."""
    survey_id, response_id = row.payload["survey_id"], row.payload["response_id"]
    if not (ctx.settings.get("QUALTRICS_API_URL") and ctx.settings.get("QUALTRICS_API_TOKEN")):
        raise PermanentError("qualtrics is not configured (QUALTRICS_API_URL, QUALTRICS_API_TOKEN)")
    try:
        form = load_form(ctx.program)
    except form_mapping.FormConfigError as exc:
        raise PermanentError(str(exc)) from None
    answer = requests.get(f"{api_base(ctx.settings)}/API/v3/surveys/{survey_id}/responses/{response_id}",
                          headers=_headers(ctx.settings),
                          timeout=float(ctx.settings["OUTSIDE_TIMEOUT_SECONDS"]))
    status = answer.status_code
    if status == 404:
        raise TransientError(f"qualtrics response not yet visible: {response_id}")
    if status == 429 or status >= 500:
        raise TransientError(f"qualtrics answered HTTP {status} for {response_id}")
    if status in (401, 403):
        raise CredentialsRefused(SOURCE, f"qualtrics refused QUALTRICS_API_TOKEN (HTTP {status}) for {response_id}; "
                                         f"fix the token, then flask inbox replay {row.id}")
    if status != 200:
        raise PermanentError(f"qualtrics answered HTTP {status} for {response_id}")
    try:
        values = answer.json()["result"]["values"]
        if not isinstance(values, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise TransientError(f"qualtrics answer for {response_id} was not the documented JSON") from None
    return map_values(form, values)


# ---- the catch-up job: responses recorded since, whose notice may never have come ----

#: How often the export's progress is asked before giving up until the next run.
EXPORT_POLLS = 5
EXPORT_POLL_SECONDS = 1.0


def _export_call(method: str, url: str, settings: dict, what: str, **kwargs) -> dict:
    answer = requests.request(method, url, headers=_headers(settings),
                              timeout=float(settings["OUTSIDE_TIMEOUT_SECONDS"]), **kwargs)
    status = answer.status_code
    if status in (401, 403):
        raise CredentialsRefused(SOURCE, f"qualtrics refused QUALTRICS_API_TOKEN (HTTP {status}) for {what}")
    if status != 200:
        raise TransientError(f"qualtrics answered HTTP {status} for {what}")
    try:
        body = answer.json()
        if not isinstance(body, dict):
            raise TypeError
    except (ValueError, TypeError):
        raise TransientError(f"qualtrics answer for {what} was not the documented JSON") from None
    return body


def _result(body: dict, key: str, what: str) -> str:
    value = (body.get("result") or {}).get(key) if isinstance(body.get("result"), dict) else None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", value):
        raise TransientError(f"qualtrics answer for {what} has no {key}")
    return value


def catch_up(ctx: Context, since: datetime) -> list[tuple[str, dict]] | None:
    """Responses of our surveys recorded since `since`, by the response export (apis.md 1b, the
    only list of responses documented there): POST export-responses with startDate, poll its
    progress, GET the file (uncompressed JSON); only each response's responseId is kept. An
    export holds only closed responses unless asked for those in progress. None when Qualtrics
    is not configured (no call is made)."""
    settings = ctx.settings
    if not (settings.get("QUALTRICS_API_URL") and settings.get("QUALTRICS_API_TOKEN")):
        return None
    found = []
    start = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for survey_id in survey_ids():
        base = f"{api_base(settings)}/API/v3/surveys/{survey_id}/export-responses"
        what = f"the catch-up export of {survey_id}"
        started = _export_call("POST", base, settings, what,
                               json={"format": "json", "compress": False, "startDate": start})
        progress_id = _result(started, "progressId", what)
        for attempt in range(EXPORT_POLLS):
            progress = _export_call("GET", f"{base}/{progress_id}", settings, what)
            state = (progress.get("result") or {}).get("status") if isinstance(progress.get("result"), dict) else None
            if state == "complete":
                break
            if state == "failed":
                raise TransientError(f"qualtrics reported {what} failed")
            if attempt + 1 < EXPORT_POLLS:
                time.sleep(EXPORT_POLL_SECONDS)
        else:
            raise TransientError(f"qualtrics did not finish {what} in time")
        file_id = _result(progress, "fileId", what)
        responses = _export_call("GET", f"{base}/{file_id}/file", settings, what).get("responses")
        if not isinstance(responses, list):
            raise TransientError(f"qualtrics file of {what} has no responses list")
        for response in responses:
            response_id = response.get("responseId") if isinstance(response, dict) else None
            if not isinstance(response_id, str) or not RESPONSE_ID.fullmatch(response_id):
                log.warning("qualtrics catch-up skipped a response without a readable responseId")
                continue
            found.append((source_key(response_id), {"survey_id": survey_id, "response_id": response_id}))
    return found


# ---- CLI: flask qualtrics subscribe | list | delete ----

cli = AppGroup("qualtrics", help="Qualtrics event subscriptions (the survey's webhook).")


def _cli_settings(*needed: str) -> dict:
    settings = current_app.extensions["peerline"].settings
    missing = [k for k in needed if not settings.get(k)]
    if missing:
        raise click.ClickException(f"Set {', '.join(missing)} first (environment or .env).")
    return settings


def _masked(url: str) -> str:
    return re.sub(r"(token=)[^&]*", r"\1****", url or "")


def _call(method: str, path: str, settings: dict, **kwargs) -> dict:
    try:
        answer = requests.request(method, f"{api_base(settings)}/API/v3/{path}", headers=_headers(settings),
                                  timeout=float(settings["OUTSIDE_TIMEOUT_SECONDS"]), **kwargs)
    except requests.RequestException as exc:
        raise click.ClickException(f"Could not reach Qualtrics at {api_base(settings)} ({type(exc).__name__}).")
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if not answer.ok:
        error = ((body.get("meta") or {}).get("error") or {}).get("errorMessage", "") if isinstance(body, dict) else ""
        raise click.ClickException(f"Qualtrics answered HTTP {answer.status_code}" + (f": {error}" if error else "")
                                   + (" (check QUALTRICS_API_TOKEN and that its user is a brand administrator)"
                                      if answer.status_code in (401, 403) else ""))
    return body if isinstance(body, dict) else {}


@cli.command("subscribe")
@click.option("--survey", required=True, help="The survey id, SV_...")
def subscribe(survey):
    """Ask Qualtrics to tell this server about every completed response of a survey."""
    settings = _cli_settings("QUALTRICS_API_URL", "QUALTRICS_API_TOKEN", "QUALTRICS_WEBHOOK_TOKEN", "PUBLIC_BASE_URL")
    if not SURVEY_ID.fullmatch(survey):
        raise click.BadParameter("a survey id looks like SV_ followed by letters and digits", param_hint="--survey")
    if survey not in survey_ids():
        # A subscription whose every notice we would refuse (403) only looks like it worked.
        raise click.ClickException(f"{survey} is not in {FORM_FILE.relative_to(ROOT)} [survey] ids, so its "
                                   "notices would be refused: add it there, restart, and subscribe again.")
    if not settings["PUBLIC_BASE_URL"].startswith("https://"):
        click.echo("warning: PUBLIC_BASE_URL is not https; the webhook token would travel in clear.", err=True)
    url = f"{settings['PUBLIC_BASE_URL']}/webhooks/qualtrics?token={settings['QUALTRICS_WEBHOOK_TOKEN']}"
    body = {"topics": f"surveyengine.completedResponse.{survey}", "publicationUrl": url, "encrypt": False}
    if settings.get("QUALTRICS_SHARED_KEY"):
        body["sharedKey"] = settings["QUALTRICS_SHARED_KEY"]
    result = _call("POST", "eventsubscriptions/", settings, json=body).get("result") or {}
    click.echo(f"Subscribed {result.get('id', '(no id returned)')}: completed responses of {survey} "
               f"are sent to {_masked(url)}")


@cli.command("list")
def list_subscriptions():
    """Event subscriptions of the token's brand."""
    settings = _cli_settings("QUALTRICS_API_URL", "QUALTRICS_API_TOKEN")
    result = _call("GET", "eventsubscriptions/", settings).get("result") or {}
    elements = result.get("elements", []) if isinstance(result, dict) else result
    if not elements:
        click.echo("No event subscriptions.")
    for sub in elements:
        click.echo(f"{sub.get('id', '?')}  {sub.get('topics', '')}  {_masked(sub.get('publicationUrl', ''))}")


@cli.command("delete")
@click.argument("subscription_id")
def delete_subscription(subscription_id):
    """Remove an event subscription (see `list` for ids)."""
    settings = _cli_settings("QUALTRICS_API_URL", "QUALTRICS_API_TOKEN")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", subscription_id):
        raise click.BadParameter("not a subscription id", param_hint="SUBSCRIPTION_ID")
    _call("DELETE", f"eventsubscriptions/{subscription_id}", settings)
    click.echo(f"Deleted {subscription_id}.")


def init_app(app) -> None:
    """A configured Qualtrics form must have a mapping that fits the program: stop the start if not."""
    if app.config.get("QUALTRICS_WEBHOOK_TOKEN") or app.config.get("QUALTRICS_API_TOKEN"):
        load_form(app.extensions["peerline"].program)
