"""Outside systems, registered in one place.

`build_context` chooses each backend from the settings (docs/architecture.md section 3): the embedded
default when a system's credentials are absent. Only the composition root (`peerline_root.py`) calls it. `register_all` adds every webhook blueprint.
"""
from __future__ import annotations

from config import messages as messages_module
from config import program as program_module
from config import settings as settings_module
from integrations import _webhooks, airtable, database, outbox, qualtrics, redcap, sendgrid, twilio
from workflows.clock import Clock
from workflows.context import Context

#: Outside-system modules. Each may define: `bp` (its webhook blueprint), `init_app(app)`,
#: `cli` (a click group, `flask <name> ...`), `SOURCE` + `fetch_answers(ctx, row)` (a form
#: system whose inbox rows the worker turns into answers), `catch_up(ctx, since)` (what was
#: completed since, for the catch-up job; None when not configured). This tuple is the only registration.
#: The service's own pages are in `web/` (web.register_pages).
INTEGRATIONS: tuple = (qualtrics, redcap, twilio, sendgrid, airtable)


def build_context(values: dict, *, clock: Clock | None = None) -> Context:
    """The Context's backends for these settings; the composition root (peerline_root.py)
    connects it to the queue."""
    clock = clock or Clock()
    db = database.Database(settings_module.database_url(values), clock=clock,
                           wait_seconds=float(values.get("DATABASE_WAIT_SECONDS") or 5))
    program = program_module.load(values["PROGRAM_FILE"])
    templates = messages_module.load(settings_module.ROOT / "config" / "messages.toml")
    if values.get("AIRTABLE_API_KEY"):
        store = airtable.AirtableCaseStore.from_settings(values, engine=db.engine)
    else:
        store = database.SqlCaseStore(db)
    embedded = outbox.OutboxSender(db)
    senders = {"sms": embedded, "email": embedded}
    if values.get("TWILIO_ACCOUNT_SID") and values.get("TWILIO_AUTH_TOKEN"):
        senders["sms"] = twilio.TwilioSender.from_settings(values, db)
    if values.get("SENDGRID_API_KEY"):
        senders["email"] = sendgrid.SendGridSender.from_settings(values, db)
    fetchers = {m.SOURCE: m.fetch_answers for m in INTEGRATIONS if hasattr(m, "fetch_answers")}
    catchups = {m.SOURCE: m.catch_up for m in INTEGRATIONS if hasattr(m, "catch_up")}
    ctx = Context(settings=values, program=program, templates=templates, db=db, store=store,
                  senders=senders, fetchers=fetchers, catchups=catchups, clock=clock)
    return ctx


def register_all(app) -> None:
    _webhooks.init_app(app)     # the one answer to every webhook's errors
    for module in INTEGRATIONS:
        if hasattr(module, "bp"):
            app.register_blueprint(module.bp)
        if hasattr(module, "init_app"):
            module.init_app(app)
        if hasattr(module, "cli"):
            app.cli.add_command(module.cli)
