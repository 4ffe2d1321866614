"""Webhook: POST /webhooks/airtable (a MAC-checked nudge that queues the store-changes poll),
and the management of Airtable's webhook (create, list, refresh before its 7-day expiry, and
the periodic check of its health, which sets how often the poll reads: workflows/watch.py)."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from datetime import datetime, timedelta, timezone

from flask import Blueprint

from integrations._webhooks import Ignored, MalformedPayload, SignatureError, Webhook, parse_json
from integrations.airtable.metadata import base_tables
from integrations.airtable.schema import CASES
from integrations.airtable.store import AirtableCaseStore
from workflows import watch

log = logging.getLogger("peerline.airtable")

bp = Blueprint("airtable", __name__)
WEBHOOK_PATH = "/webhooks/airtable"
#: Whose edits ping us: people in the Airtable app and Airtable automations. Our own API
#: writes (publicApi) do not, or every offer we record would ping us back.
WEBHOOK_SOURCES = ["client", "automation"]
WEBHOOK_SCOPES = "webhook:manage and data.records:read, plus schema.bases:read to find the Cases table"


def mac_ok(secret_base64: str | None, body: bytes, header: str) -> bool:
    """X-Airtable-Content-MAC is "hmac-sha256=" + hex HMAC-SHA256 of the raw body, keyed with
    the base64-decoded macSecretBase64; compared in constant time."""
    if not secret_base64 or not header:
        return False
    try:
        key = base64.b64decode(secret_base64, validate=True)
    except (binascii.Error, ValueError):
        log.error("AIRTABLE_WEBHOOK_SECRET is not base64: set it to the macSecretBase64 `flask airtable "
                  "webhook create` printed")
        return False
    expected = "hmac-sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("utf-8", "replace"))


class Ping(Webhook):
    """POST /webhooks/airtable: a nudge naming only the base and the webhook; queue the poll."""

    system = "airtable"

    def verify(self, ctx, request) -> None:
        if not mac_ok(ctx.settings.get("AIRTABLE_WEBHOOK_SECRET"), request.get_data(cache=True),
                      request.headers.get("X-Airtable-Content-MAC", "")):
            # Our secret may be wrong: the poll goes back to every minute until a check of the
            # webhook finds its deliveries working (a forged ping can do no more than that).
            _note(watch.note_ping_refused, ctx)
            raise SignatureError("X-Airtable-Content-MAC missing or wrong")

    def parse(self, ctx, request) -> dict:
        ping = parse_json(request.get_data(cache=True), "body")
        for name in ("base", "webhook"):
            part = ping.get(name) if isinstance(ping, dict) else None
            if not isinstance(part, dict) or not isinstance(part.get("id"), str) or not part["id"]:
                raise MalformedPayload(f"{name}.id", "missing")
        if ping["base"]["id"] != ctx.settings.get("AIRTABLE_BASE_ID"):
            return Ignored(f"a ping for another base, webhook={_airtable_id(ping['webhook']['id'])}")
        return ping

    def answer_ignored(self, ignored):
        return "", 200

    def dispatch(self, ctx, ping: dict):
        webhook_id = _airtable_id(ping["webhook"]["id"])
        _note(watch.note_ping, ctx)         # should the queue lose the nudge, the minute poll reads
        try:
            ctx.run_soon("poll_approvals")
        except Exception as exc:   # the ping is noted: the periodic poll reads next minute
            log.warning("airtable ping: could not queue the poll (%s); the periodic poll will", type(exc).__name__)
        log.info("airtable ping webhook=%s: poll queued", webhook_id)
        return "", 200


Ping.route(bp, WEBHOOK_PATH, endpoint="webhook_ping")


def _note(step, ctx) -> None:
    try:
        step(ctx)
    except Exception as exc:      # a mark missed costs at most a poll's period; never the answer
        log.warning("airtable ping: could not note it (%s)", type(exc).__name__)


def _airtable_id(value: str) -> str:
    """An Airtable id as it may be logged, else a placeholder."""
    return value if re.fullmatch(r"[a-z]{3}[A-Za-z0-9]{14}", value) else "(not an id)"


def webhook_url(public_base_url: str) -> str:
    return public_base_url.rstrip("/") + WEBHOOK_PATH


def our_webhooks(store: AirtableCaseStore, public_base_url: str) -> list:
    """The base's webhooks that notify this service (pyairtable Webhook objects)."""
    url = webhook_url(public_base_url)
    return [w for w in store.api.base(store.base_id).webhooks() if w.notification_url == url]


#: The Cases fields whose edits ping us: what the store-changes poll carries out.
WATCHED_FIELDS = ("Status", "Tier 3 Referral")
#: The worker refreshes our webhook once fewer than this many days of its 7 are left.
REFRESH_WHEN_DAYS_LEFT = 6


def create_webhook(store: AirtableCaseStore, public_base_url: str):
    """Watch the Cases table's Status and Tier 3 Referral, edited by people or automations (not
    by our own API writes). Returns pyairtable's CreateWebhookResponse (id, mac_secret_base64,
    expiration_time)."""
    cases = base_tables(store).get(CASES)
    if cases is None:
        raise LookupError("the base has no Cases table: run `flask airtable init` first")
    ids = {f["name"]: f["id"] for f in cases.get("fields", [])}
    missing = [name for name in WATCHED_FIELDS if name not in ids]
    if missing:
        raise LookupError(f"the Cases table has no {missing[0]} field: run `flask airtable init` first")
    spec = {"options": {"filters": {"dataTypes": ["tableData"], "recordChangeScope": cases["id"],
                                    "watchDataInFieldIds": [ids[n] for n in WATCHED_FIELDS],
                                    "fromSources": WEBHOOK_SOURCES}}}
    return store.api.base(store.base_id).add_webhook(webhook_url(public_base_url), spec)


def refresh_webhooks(store: AirtableCaseStore, public_base_url: str, *, now: datetime | None = None) -> list:
    """Extend our webhooks by Airtable's 7 days (with `now`: only those with fewer than
    REFRESH_WHEN_DAYS_LEFT days left) and turn their notifications back on if Airtable turned
    them off. Safe to run any number of times. Returns our webhooks."""
    hooks = our_webhooks(store, public_base_url)
    for hook in hooks:
        expires = _expiry(hook)
        if now is None or (expires is not None and expires - now <= timedelta(days=REFRESH_WHEN_DAYS_LEFT)):
            hook.extend_expiration()
            log.info("airtable webhook=%s refreshed", _airtable_id(hook.id))
        if not hook.are_notifications_enabled:
            hook.enable_notifications()
            hook.are_notifications_enabled = True
            log.warning("airtable webhook=%s had notifications off; turned them on", _airtable_id(hook.id))
    if not hooks:
        log.warning("no Airtable webhook notifies %s: approvals wait for the minute poll "
                    "(see `flask airtable webhook create`)", WEBHOOK_PATH)
    return hooks


def healthy_until(hooks: list, now: datetime) -> datetime | None:
    """Until when our webhooks, as Airtable lists them, can be trusted to ping: the latest
    expiry of one that is on, notifying, unexpired, and whose last delivery did not fail
    (None: none can; one that never expires counts a week). Airtable pings only on a change,
    so at idle this is the evidence; after a failed delivery, only the next good one is."""
    good = [_expiry(h) or now + timedelta(days=7) for h in hooks
            if h.is_hook_enabled and h.are_notifications_enabled
            and (h.last_notification_result is None or h.last_notification_result.success)]
    return max((e for e in good if e > now), default=None)


def check_webhooks(ctx) -> list:
    """The job `refresh_airtable_webhooks`: refresh our webhooks when due, and note whether
    they are healthy (the store-changes poll reads every minute when not, workflows/watch.py).
    A check that fails notes nothing: the last verdict lapses by itself."""
    hooks = refresh_webhooks(ctx.store, ctx.settings["PUBLIC_BASE_URL"], now=ctx.now())
    watch.note_webhook_check(ctx, healthy_until(hooks, ctx.now()))
    for hook in hooks:
        if len(hook.specification.options.filters.watch_data_in_field_ids or ()) < len(WATCHED_FIELDS):
            log.warning("airtable webhook=%s watches only Status: a Tier 3 Referral waits for the hourly poll "
                        "(`flask airtable webhook create --replace`)", _airtable_id(hook.id))
    return hooks


def _expiry(hook) -> datetime | None:
    """A webhook's expiration time (pyairtable leaves a string there after a refresh)."""
    value = hook.expiration_time
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value
