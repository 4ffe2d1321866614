"""Outside systems, registered in one place.

`build_context` chooses each backend from the settings (docs/architecture.md section 3): the embedded
default when a system's credentials are absent. `register_all` adds every webhook blueprint.
"""
from __future__ import annotations

from config import settings as settings_module
from integrations import airtable, database, outbox, qualtrics, redcap, sendgrid, supporter_page, twilio
from workflows.clock import Clock
from workflows.context import Context
from workflows.notify import load_templates

#: Outside-system modules. Each may define: `bp` (its webhook blueprint), `init_app(app)`,
#: `cli` (a click group, `flask <name> ...`), `SOURCE` + `fetch_answers(ctx, row)` (a form
#: system whose inbox rows the worker turns into answers). This tuple is the only registration;
#: `supporter_page` (the supporter's private link) is the service's own page registered here too.
INTEGRATIONS: tuple = (qualtrics, redcap, twilio, sendgrid, airtable, supporter_page)


def build_context(values: dict, *, enqueue=None, clock: Clock | None = None) -> Context:
    clock = clock or Clock()
    db = database.Database(settings_module.database_url(values), clock=clock)
    program = settings_module.load_program(values["PROGRAM_FILE"])
    templates = load_templates(settings_module.ROOT / "config" / "messages.toml")
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
    ctx = Context(settings=values, program=program, templates=templates, db=db, store=store,
                  senders=senders, fetchers=fetchers, clock=clock)
    if enqueue is not None:
        ctx.enqueue = enqueue
    return ctx


def register_all(app) -> None:
    for module in INTEGRATIONS:
        if hasattr(module, "bp"):
            app.register_blueprint(module.bp)
        if hasattr(module, "init_app"):
            module.init_app(app)
        if hasattr(module, "cli"):
            app.cli.add_command(module.cli)
