"""`flask airtable init|check` and `flask airtable webhook create|list|refresh`."""
from __future__ import annotations

from datetime import datetime

import click
import requests
from flask import current_app
from flask.cli import AppGroup
from pyairtable.utils import datetime_from_iso_str

from integrations.airtable.metadata import check_base, init_base
from integrations.airtable.store import AirtableCaseStore
from integrations.airtable.webhooks import (WEBHOOK_SCOPES, create_webhook, our_webhooks, refresh_webhooks,
                                            webhook_url)
from workflows.notify import show_time

cli = AppGroup("airtable", help="The Airtable base that holds the cases (docs/architecture.md section 6).")


def _configured_store() -> AirtableCaseStore:
    store = current_app.extensions["peerline"].store
    if not isinstance(store, AirtableCaseStore):
        raise click.ClickException("Airtable is not configured: set AIRTABLE_API_KEY and AIRTABLE_BASE_ID "
                                   "(see .env.example).")
    return store


def _refusal(exc: requests.RequestException,
             scopes: str = "schema.bases:read / schema.bases:write") -> click.ClickException:
    if not isinstance(exc, requests.HTTPError):
        settings = current_app.extensions["peerline"].settings
        return click.ClickException(f"Could not reach Airtable at {settings.get('AIRTABLE_API_URL')} "
                                    f"({type(exc).__name__}); check AIRTABLE_API_URL and the network.")
    status = getattr(exc.response, "status_code", None)
    hint = {401: "the token is wrong or revoked", 403: f"the token lacks a scope "
            f"({scopes}) or access to this base",
            404: "no base with this AIRTABLE_BASE_ID"}.get(status, "see the Airtable API documentation")
    return click.ClickException(f"Airtable refused the request (HTTP {status}): {hint}.")


@cli.command("init")
def init_cmd():
    """Create the missing tables and fields (safe to run again)."""
    store = _configured_store()
    time_zone = current_app.extensions["peerline"].program.program.timezone
    try:
        created, refused = init_base(store, time_zone)
    except requests.RequestException as exc:
        raise _refusal(exc) from None
    for line in created:
        click.echo(f"created {line}")
    if not created:
        click.echo("Nothing to create: the base has every table and field Peerline needs.")
    for line in refused:
        click.echo(f"could not create: {line} (change it in Airtable, then run init again)", err=True)
    if refused:
        raise SystemExit(1)


@cli.command("check")
def check_cmd():
    """Report drift from the expected tables and fields; exit 1 when there is any."""
    store = _configured_store()
    try:
        drift = check_base(store)
    except requests.RequestException as exc:
        raise _refusal(exc) from None
    for line in drift:
        click.echo(line)
    if drift:
        click.echo(f"{len(drift)} difference(s); `flask airtable init` adds what is missing.", err=True)
        raise SystemExit(1)
    click.echo("The base matches: every table and field is in place.")


webhook_cli = AppGroup("webhook", help="The webhook that tells Peerline of approvals at once.")
cli.add_command(webhook_cli)


def _expires(when) -> str:
    """Airtable's expiry (an ISO string in UTC) as the program's people read times (their zone)."""
    try:
        when = datetime_from_iso_str(when) if isinstance(when, str) else when
    except ValueError:
        return when
    return show_time(current_app.extensions["peerline"], when) if isinstance(when, datetime) else str(when or "-")


def _public_base_url() -> str:
    url = current_app.extensions["peerline"].settings["PUBLIC_BASE_URL"]
    if not url.startswith("https://"):
        raise click.ClickException(f"PUBLIC_BASE_URL is {url}: set it to the https address Airtable can "
                                   "reach this service at (Airtable calls PUBLIC_BASE_URL/webhooks/airtable).")
    return url


@webhook_cli.command("create")
@click.option("--replace", is_flag=True, help="Delete this service's existing webhook first.")
def webhook_create_cmd(replace):
    """Register the webhook; prints its secret once (set it as AIRTABLE_WEBHOOK_SECRET)."""
    store, url = _configured_store(), _public_base_url()
    try:
        existing = our_webhooks(store, url)
        if existing and not replace:
            raise click.ClickException(
                f"A webhook already notifies {webhook_url(url)} ({existing[0].id}). Its secret was shown when it "
                "was made; to make a new one (and a new secret), run again with --replace.")
        for hook in existing:
            hook.delete()
            click.echo(f"deleted webhook {hook.id}")
        created = create_webhook(store, url)
    except requests.RequestException as exc:
        raise _refusal(exc, WEBHOOK_SCOPES) from None
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created webhook {created.id}: Airtable will POST to {webhook_url(url)} when a person or an "
               f"automation changes a case's Status (expires {_expires(created.expiration_time)}; the worker refreshes it).")
    click.echo("Set this on every web process (in .env or the platform's settings), then restart them. "
               "Airtable shows it only now:")
    click.echo(f"AIRTABLE_WEBHOOK_SECRET={created.mac_secret_base64}")


@webhook_cli.command("list")
def webhook_list_cmd():
    """The base's webhooks, marking the one that notifies this service."""
    store = _configured_store()
    ours = webhook_url(current_app.extensions["peerline"].settings["PUBLIC_BASE_URL"])
    try:
        hooks = store.api.base(store.base_id).webhooks()
    except requests.RequestException as exc:
        raise _refusal(exc, WEBHOOK_SCOPES) from None
    if not hooks:
        click.echo("The base has no webhooks. `flask airtable webhook create` makes Peerline's.")
    for hook in hooks:
        last = hook.last_notification_result
        click.echo(f"{hook.id}  {'ours ' if hook.notification_url == ours else 'other'}  "
                   f"expires={_expires(hook.expiration_time)}  enabled={hook.is_hook_enabled and hook.are_notifications_enabled}"
                   f"  last_notification={'ok' if last and last.success else ('failed' if last else '-')}"
                   f"  {hook.notification_url or ''}")


@webhook_cli.command("refresh")
def webhook_refresh_cmd():
    """Extend this service's webhook by 7 days now (the worker does it once a day, checking it every 2 hours)."""
    store = _configured_store()
    try:
        hooks = refresh_webhooks(store, current_app.extensions["peerline"].settings["PUBLIC_BASE_URL"])
    except requests.RequestException as exc:
        raise _refusal(exc, WEBHOOK_SCOPES) from None
    if not hooks:
        raise click.ClickException("No webhook notifies this service: run `flask airtable webhook create`.")
    for hook in hooks:
        click.echo(f"refreshed {hook.id}: expires {_expires(hook.expiration_time)}")
