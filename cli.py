"""Command line, grouped by noun: `flask --app app <noun> <verb>` (DESIGN.md section 2)."""
from __future__ import annotations

import csv
import json
from datetime import datetime

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from workflows import tasks
from workflows.notify import normalize_phone
from workflows.model import Resource, Reviewer, Roster, Supporter

roster_cli = AppGroup("roster", help="Supporters, reviewers and resources.")
inbox_cli = AppGroup("inbox", help="Received submissions (ids and state only; no answers).")
cases_cli = AppGroup("cases", help="Cases in the case store.")

ROSTER_COLUMNS = ("Type", "Name", "Phone", "Email", "Institution", "Department", "Role", "Specialty",
                  "Active", "Max Open Cases", "On Call", "Program Lead", "Kind", "URL", "Hours")
TRUE = {"1", "true", "yes", "y", "x", "checked"}


def _ctx():
    return current_app.extensions["peerline"]


def read_roster_csv(path) -> tuple[Roster, list[str]]:
    """Parse a roster CSV (see config/sample_roster.csv). Returns the roster and row errors."""
    roster, errors = Roster(), []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        unknown = [c for c in (reader.fieldnames or []) if c not in ROSTER_COLUMNS]
        if not reader.fieldnames or "Type" not in reader.fieldnames or "Name" not in reader.fieldnames:
            return roster, [f"{path}: the first line must name the columns, at least Type and Name "
                            f"(all columns: {', '.join(ROSTER_COLUMNS)})"]
        if unknown:
            errors.append(f"{path}: unknown columns ignored: {', '.join(unknown)}")
        for line, row in enumerate(reader, start=2):
            get = lambda k: (row.get(k) or "").strip()  # noqa: E731
            kind, name = get("Type").lower(), get("Name")
            if get("Phone") and kind in ("supporter", "reviewer"):
                row["Phone"] = normalize_phone(get("Phone"))   # E.164, as SMS providers want
            if not name:
                errors.append(f"line {line}: Name is empty; row skipped")
                continue
            if kind == "supporter":
                try:
                    max_open = int(get("Max Open Cases") or 2)
                except ValueError:
                    errors.append(f"line {line}: Max Open Cases must be a whole number; row skipped")
                    continue
                roster.supporters.append(Supporter(
                    name=name, phone=get("Phone"), email=get("Email"), institution=get("Institution"),
                    department=get("Department"), role=get("Role"), specialty=get("Specialty"),
                    active=get("Active").lower() in TRUE if get("Active") else True, max_open_cases=max_open))
            elif kind == "reviewer":
                roster.reviewers.append(Reviewer(
                    name=name, phone=get("Phone"), email=get("Email"), institution=get("Institution"),
                    on_call=get("On Call").lower() in TRUE, program_lead=get("Program Lead").lower() in TRUE))
            elif kind == "resource":
                roster.resources.append(Resource(
                    name=name, institution=get("Institution"), kind=get("Kind"), phone=get("Phone"),
                    url=get("URL"), hours=get("Hours")))
            else:
                errors.append(f"line {line}: Type must be supporter, reviewer or resource; row skipped")
    return roster, errors


@roster_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--if-empty", is_flag=True, help="Only when the store has no supporters or reviewers yet.")
def roster_import(path, if_empty):
    """Load supporters, reviewers and resources from a CSV file (upsert on Name + Institution)."""
    ctx = _ctx()
    if if_empty and not ctx.store.roster_is_empty():
        click.echo("Roster already loaded; nothing imported.")
        return
    roster, errors = read_roster_csv(path)
    for e in errors:
        click.echo(f"warning: {e}", err=True)
    counts = ctx.store.import_roster(roster)
    click.echo(f"Imported {counts['supporters']} supporters, {counts['reviewers']} reviewers, "
               f"{counts['resources']} resources.")


@roster_cli.command("seed")
def roster_seed():
    """Load config/sample_roster.csv into the embedded store when it is empty (`make run`)."""
    ctx = _ctx()
    if ctx.settings.get("AIRTABLE_API_KEY"):
        click.echo("Airtable is configured: the sample roster is not loaded there.")
        return
    if not ctx.store.roster_is_empty():
        return
    from config.settings import ROOT
    roster, _ = read_roster_csv(ROOT / "config" / "sample_roster.csv")
    counts = ctx.store.import_roster(roster)
    click.echo(f"Loaded the sample roster: {counts['supporters']} supporters, {counts['reviewers']} reviewers, "
               f"{counts['resources']} resources (config/sample_roster.csv).")


def _fmt(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else str(value or "")


@click.command("outbox")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def outbox_cmd(as_json):
    """Messages the embedded SMS and email provider has 'sent'."""
    for row in _ctx().db.outbox_list():
        if as_json:
            click.echo(json.dumps({"at": _fmt(row["at"]), "channel": row["channel"], "to": row["recipient"],
                                   "case": row["case_id"], "subject": row["subject"], "text": row["body"]}))
        else:
            text = (row["subject"] + ": " if row["subject"] else "") + " ".join(row["body"].split())
            click.echo(f"{_fmt(row['at'])}  {row['channel']:<5}  {row['recipient']:<28}  {row['case_id']:<8}  {text}")


@inbox_cli.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also finished rows.")
def inbox_list(show_all):
    """Submissions not finished (parked, waiting to retry, in progress)."""
    rows = _ctx().db.list_inbox(None if show_all else ("new", "processing", "retry", "parked"))
    if not rows:
        click.echo("No submissions waiting." if not show_all else "The inbox is empty.")
    for r in rows:
        click.echo(f"{r['id']:>6}  {r['source']:<9}  {r['status']:<10}  attempts={r['attempts']:<2}  "
                   f"received={_fmt(r['received_at'])}  case={r['case_id'] or '-'}  {r['last_error']}")


@inbox_cli.command("replay")
@click.argument("inbox_id", type=int)
def inbox_replay(inbox_id):
    """Run a submission again through the same idempotent path (safe to repeat)."""
    ctx = _ctx()
    if not ctx.db.reopen_submission(inbox_id):
        raise click.ClickException(f"No submission with id {inbox_id}. See `flask inbox list`.")
    from workflows import intake
    case_id = intake.process_submission(ctx, inbox_id)
    row = ctx.db.inbox_row(inbox_id)
    if case_id:
        click.echo(f"Submission {inbox_id} is case {case_id}.")
    else:
        click.echo(f"Submission {inbox_id} is {row['status']}: {row['last_error']}. "
                   f"The worker will retry it; see `flask inbox list`.")


@cases_cli.command("list")
@click.option("--status", help="Only cases with this Status.")
def cases_list(status):
    """Cases and their state (no personal details)."""
    ctx = _ctx()
    names = {s.record_id: s.name for s in ctx.store.supporters()}
    for c in ctx.store.list_cases(status):
        supporter = names.get(c.assigned_supporter, c.assigned_supporter)
        click.echo(f"{c.case_id:<8}  {c.status:<16}  {c.urgency:<8}  {c.for_whom or '-':<9}  "
                   f"{c.institution or '-':<6}  submitted={_fmt(c.submitted_at)}  review_due={_fmt(c.review_due)}"
                   + (f"  supporter={supporter}" if supporter else "")
                   + (f"  offer_expires={_fmt(c.offer_expires)}" if c.offer_expires else "")
                   + (f"  problems: {c.problems}" if c.problems else ""))


def _case_id(ctx, given: str) -> str:
    """PS-4821, ps-4821 or 4821 -> PS-4821."""
    prefix = ctx.program["program"].get("case_prefix", "PS")
    given = given.strip().upper()
    return given if given.startswith(prefix.upper() + "-") else f"{prefix}-{given}"


def _supporter_named(ctx, name: str) -> Supporter:
    wanted = " ".join(name.split()).casefold()
    found = [s for s in ctx.store.supporters() if " ".join(s.name.split()).casefold() == wanted]
    if not found:
        raise click.ClickException(f"No supporter named {name!r} in the roster.")
    if len(found) > 1:
        raise click.ClickException(f"More than one supporter is named {name!r} (at "
                                   f"{', '.join(s.institution or 'no institution' for s in found)}); "
                                   "choose them in Airtable's Assigned Supporter instead.")
    return found[0]


@cases_cli.command("approve")
@click.argument("case_id")
@click.option("--supporter", "supporter_name", metavar="NAME",
              help="Offer it to this supporter (by name) instead of the best candidate.")
@click.option("--colleague-agreed", is_flag=True,
              help="For a request made for a colleague: you checked that they agreed to be contacted.")
def cases_approve(case_id, supporter_name, colleague_agreed):
    """Approve a case (as a reviewer does in Airtable) and offer it to a supporter by SMS."""
    from workflows import offers
    ctx = _ctx()
    case_id = _case_id(ctx, case_id)
    case = ctx.store.find_case(case_id=case_id)
    if case is None:
        raise click.ClickException(f"No case {case_id}. See `flask cases list`.")
    if case.for_whom == "Colleague" and not colleague_agreed:
        raise click.ClickException(f"{case_id} was asked for by a colleague on someone's behalf. Approve it "
                                   "only once that person agreed to be contacted, with --colleague-agreed.")
    supporter = _supporter_named(ctx, supporter_name) if supporter_name else None
    try:
        result = offers.approve(ctx, case_id, supporter=supporter, actor="cli")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    case = ctx.store.find_case(case_id=case_id)
    if result == "offered":
        who = next((s.name for s in ctx.store.supporters() if s.record_id == case.assigned_supporter), "?")
        click.echo(f"{case_id} approved and offered to {who} by SMS; the offer runs out at "
                   f"{_fmt(case.offer_expires)}. Their YES or NO arrives by SMS (try `flask sms simulate`).")
    elif result == "needs a person":
        click.echo(f"{case_id} approved, but no supporter fits it: it is back in Needs attention and the "
                   "reviewers were told. Choose someone with --supporter NAME.")
    else:
        click.echo(f"{case_id} is {case.status}.")


@cases_cli.command("close")
@click.argument("case_id")
def cases_close(case_id):
    """Close a case: an open offer is withdrawn and the supporter's link stops working."""
    from workflows import offers
    ctx = _ctx()
    case_id = _case_id(ctx, case_id)
    try:
        case = offers.close(ctx, case_id, actor="cli")
    except KeyError:
        raise click.ClickException(f"No case {case_id}. See `flask cases list`.") from None
    click.echo(f"{case_id} is Closed (at {_fmt(case.closed_at)}).")


@cases_cli.command("show")
@click.argument("case_id")
@click.option("--contact", is_flag=True, help="Also the requester's (and a referrer's) contact details and "
                                              "free text; recorded as an Event naming `cli`.")
def cases_show(case_id, contact):
    """One case: its state, offers, messages (no text) and Events; contact details only with --contact."""
    from workflows.model import Event
    from workflows.notify import show_time
    ctx = _ctx()
    case = ctx.store.find_case(case_id=_case_id(ctx, case_id))
    if case is None:
        raise click.ClickException(f"No case {_case_id(ctx, case_id)}. See `flask cases list`.")
    when = lambda t: show_time(ctx, t) if t else "-"  # noqa: E731
    names = {s.record_id: s.name for s in ctx.store.supporters()}
    for label, value in (("Case", case.case_id), ("Status", case.status), ("Urgency", case.urgency),
                         ("For", case.for_whom or "-"), ("Institution", case.institution or "-"),
                         ("Role", case.role or "-"), ("Preferences", f"role {case.role_preference}, department "
                          f"{case.department_preference}, outside hospital {'yes' if case.outside_my_institution else 'any'}"),
                         ("Submitted", when(case.submitted_at)), ("Review due", when(case.review_due)),
                         ("Supporter", names.get(case.assigned_supporter, case.assigned_supporter) or "-"),
                         ("Offer expires", when(case.offer_expires)), ("Problems", case.problems or "-")):
        click.echo(f"{label + ':':<15}{value}")
    if contact:
        ctx.store.add_events([Event(case.case_id, "Contact details shown by the command line", at=ctx.now(),
                                    actor="cli")])
        for label, name in (("Name", "requester_name"), ("Phone", "requester_phone"), ("Email", "requester_email"),
                            ("Preferred", "preferred_contact"), ("Department", "department"),
                            ("Specialty", "specialty"), ("Referrer", "referrer_name"),
                            ("Referrer phone", "referrer_phone"), ("Referrer email", "referrer_email")):
            if getattr(case, name, ""):
                click.echo(f"{label + ':':<15}{getattr(case, name)}")
    for o in ctx.db.offers_for_case(case.case_id):
        click.echo(f"offer {o['round']}: {names.get(o['supporter_id'], o['supporter_id'])}  {o['status']}  "
                   f"offered {when(o['offered_at'])}  due {when(o['expires_at'])}")
    for m in ctx.db.ledger_rows(case.case_id):
        click.echo(f"message: {m['kind']}  {m['channel']}  to {m['recipient_role']}  {m['status']}")
    for e in ctx.store.list_events(case.case_id):
        click.echo(f"{when(e.at)}  {e.actor:<24}  {e.event}")


@click.command("sweep")
@with_appcontext
def sweep_cmd():
    """Queue every unfinished submission now (the worker also does this every minute)."""
    click.echo(f"Queued {tasks.sweep(_ctx())} submissions.")


def init_app(app) -> None:
    for command in (roster_cli, inbox_cli, cases_cli, outbox_cmd):
        app.cli.add_command(command)
    inbox_cli.add_command(sweep_cmd)
