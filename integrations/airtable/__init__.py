"""Airtable: the case store on an Airtable base (pyairtable), and `flask airtable init|check`.

Connect:
1. Create a base (or use an empty one) and a personal access token at
   https://airtable.com/create/tokens with the scopes data.records:read, data.records:write,
   schema.bases:read and schema.bases:write, and access to that base.
2. Set AIRTABLE_API_KEY (the token) and AIRTABLE_BASE_ID (`app...`, from the base's URL).
   AIRTABLE_API_URL stays at https://api.airtable.com except for tests and sandboxes.
3. Run `flask --app app airtable init` (creates the tables and fields of docs/architecture.md section 6;
   safe to run again), then `flask --app app roster import roster.csv`.
4. `flask --app app airtable check` reports drift (a field renamed, retyped or deleted).
5. So that an approval in Airtable is acted on within seconds, and a quiet base costs few
   requests: give the token the webhook:manage scope too, set PUBLIC_BASE_URL to the https
   address Airtable can reach, run `flask --app app airtable webhook create`, and set the
   AIRTABLE_WEBHOOK_SECRET it prints (shown once) on the web processes. The worker checks the
   webhook every 2 hours and refreshes it before Airtable's 7-day expiry; `flask airtable
   webhook list|refresh` show and do it by hand.

The webhook (`POST /webhooks/airtable`) is only a nudge: Airtable's ping names no record and
no change. Its X-Airtable-Content-MAC (HMAC-SHA256 of the raw body, keyed with the
base64-decoded secret) is checked in constant time, the ping is noted in our database, then
the store-changes poll is queued; nothing is fetched while Airtable waits. The poll, not the
ping, is the truth: it reads the cases changed since its last read (one request, a
filterByFormula on LAST_MODIFIED_TIME()), so Peerline keeps no payload cursor (the payloads
would cost a request and still need the read of the cases as they are now). While the
webhook is healthy (the worker's check finds it on, unexpired, its last delivery not failed)
the safety-net poll reads hourly, else every minute (workflows/watch.py).

Behaviour is the SQL store's (the contract suite runs on both). Airtable allows 5 requests a
second per base, counted as they arrive, and refuses everything for 30 s after a 429, so
every request holds one of 5 places, from when it may go until a second after its answer,
shared by all threads and, through the service's own database, by every process: late
departures on a busy machine cannot bunch up at Airtable (`pacing`). A 429 is waited out
(30 s, a few times) rather than treated as a failure. Formulas
are built with `pyairtable.formulas` only.

One module per job: `schema` (the tables, derived from workflows/model.py, and cell
conversion), `pacing` (Throttle), `session` (pacing and retries around every request),
`store` (AirtableCaseStore), `metadata` (init and check), `webhooks` (the ping route and the
webhook's management), `commands` (`flask airtable ...`). This module re-exports what the
rest of the service uses; `bp` and `cli` are what `integrations/__init__.py` registers.
"""
from __future__ import annotations

from integrations.airtable.commands import cli
from integrations.airtable.metadata import base_tables, check_base, init_base
from integrations.airtable.pacing import HOLD_SECONDS, RATE_LIMIT_WAIT_SECONDS, REQUESTS_PER_SECOND, Throttle
from integrations.airtable.schema import SCHEMA, FieldSpec
from integrations.airtable.session import RETRIES, ThrottledSession
from integrations.airtable.store import AirtableCaseStore
from integrations.airtable.webhooks import (WEBHOOK_PATH, bp, check_webhooks, create_webhook, mac_ok,
                                            our_webhooks, Ping, refresh_webhooks, webhook_url)

__all__ = ["AirtableCaseStore", "FieldSpec", "HOLD_SECONDS", "RETRIES", "RATE_LIMIT_WAIT_SECONDS",
           "REQUESTS_PER_SECOND", "SCHEMA", "Throttle", "ThrottledSession", "WEBHOOK_PATH",
           "base_tables", "bp", "check_base", "check_webhooks", "cli", "create_webhook", "init_base", "mac_ok", "our_webhooks",
           "refresh_webhooks", "Ping", "webhook_url"]
