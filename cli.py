"""Command line, grouped by noun: `flask --app app <noun> <verb>` (docs/architecture.md section 2)."""
from __future__ import annotations

import csv
import json
import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from config.vocabulary import is_true
from workflows import flyers, phones, tasks
from workflows.followup import WITHDRAW_REASONS
from workflows.notify import show_time
from workflows.model import STATUSES, Resource, Reviewer, Roster, Supporter
from workflows.records import BY_HAND

if TYPE_CHECKING:
    from workflows.context import Context

roster_cli = AppGroup("roster", help="Supporters, reviewers and resources.")
inbox_cli = AppGroup("inbox", help="Received submissions (ids and state only; no answers).")
cases_cli = AppGroup("cases", help="Cases in the case store.")
purge_cli = AppGroup("purge", help="Remove personal details of cases past the retention period.")
jobs_cli = AppGroup("jobs", help="The worker's periodic jobs.")
flyers_cli = AppGroup("flyers", help="Flyers with QR codes, and their scans.")

ROSTER_COLUMNS = ("Type", "Name", "Phone", "Email", "Institution", "Department", "Role", "Specialty",
                  "Active", "Max Open Cases", "On Call", "Program Lead", "Kind", "URL", "Hours")


def _ctx():
    return current_app.extensions["peerline"]


def read_roster_csv(path, phone_region: str = phones.DEFAULT_REGION) -> tuple[Roster, list[str]]:
    """Parse a roster CSV (see config/sample_roster.csv). Returns the roster and row errors.
    Phones are read in `phone_region` when they have no country code."""
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
                number = phones.e164(get("Phone"), phone_region)   # E.164, as SMS providers want
                if number:
                    row["Phone"] = number
                else:
                    errors.append(f"line {line}: Phone is not a number we can call or text; kept as written")
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
                    active=is_true(get("Active")) if get("Active") else True, max_open_cases=max_open))
            elif kind == "reviewer":
                roster.reviewers.append(Reviewer(
                    name=name, phone=get("Phone"), email=get("Email"), institution=get("Institution"),
                    on_call=is_true(get("On Call")), program_lead=is_true(get("Program Lead"))))
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
    try:
        roster, errors = read_roster_csv(path, phones.region(ctx.program))
    except UnicodeDecodeError:
        raise click.ClickException(f"{path} is not UTF-8 text: save it as \"CSV UTF-8\" and import again.") from None
    if not (roster.supporters or roster.reviewers or roster.resources):
        # Nothing to load is a failure to report, not an import of 0 rows that looks fine.
        raise click.ClickException("\n".join(errors + [f"Nothing imported: {path} has no row that can be loaded."]))
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
    roster, _ = read_roster_csv(ROOT / "config" / "sample_roster.csv", phones.region(ctx.program))
    counts = ctx.store.import_roster(roster)
    click.echo(f"Loaded the sample roster: {counts['supporters']} supporters, {counts['reviewers']} reviewers, "
               f"{counts['resources']} resources (config/sample_roster.csv).")


def _fmt(value) -> str:
    """A time as the messages show it (the program's time zone, with its abbreviation), so what a
    command prints reads the same as the SMS and emails beside it."""
    return show_time(_ctx(), value) if isinstance(value, datetime) else str(value or "-")


def _table(headers: tuple[str, ...], rows: list[tuple]) -> None:
    """Rows under a header line, columns aligned; the last column is free length."""
    rows = [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(line[i]) for line in [headers, *rows]) for i in range(len(headers) - 1)]
    for line in [headers, *rows]:
        click.echo("  ".join([v.ljust(w) for v, w in zip(line, widths)] + [line[-1]]).rstrip())


@click.command("outbox")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many messages, newest first.")
@click.option("--case", "case_id", metavar="PS-4821", help="Only the messages of this case.")
def outbox_cmd(as_json, limit, case_id):
    """Messages the embedded SMS and email provider has 'sent', newest first."""
    ctx = _ctx()
    rows = ctx.db.outbox_recent(limit=limit, case_id=_case_id(ctx, case_id) if case_id else None)
    if as_json:
        for row in rows:
            click.echo(json.dumps({"at": row.at.astimezone(_zone(ctx)).isoformat(), "channel": row.channel,
                                   "to": row.recipient, "case": row.case_id, "subject": row.subject,
                                   "text": row.body}))
        return
    if not rows:
        click.echo("No messages" + (f" for {_case_id(ctx, case_id)}." if case_id else "."))
        return
    _table(("Sent", "Channel", "To", "Case", "Text"), [
        (_fmt(r.at), r.channel, r.recipient, r.case_id,
         (r.subject + ": " if r.subject else "") + " ".join(r.body.split())) for r in rows])


def _zone(ctx: Context):
    """The program's time zone (program.toml), as show_time uses it."""
    return ctx.program.program.tz


@inbox_cli.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also finished rows.")
def inbox_list(show_all):
    """Submissions not finished (parked, waiting to retry, in progress)."""
    rows = _ctx().db.list_inbox(None if show_all else ("new", "processing", "retry", "parked"))
    if not rows:
        click.echo("No submissions waiting." if not show_all else "The inbox is empty.")
        return
    _table(("ID", "Source", "Status", "Attempts", "Received", "Case", "Last error"), [
        (r.id, r.source, r.status, r.attempts, _fmt(r.received_at), r.case_id or "-",
         r.last_error or "") for r in rows])


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
    elif row.status == "retry":
        raise click.ClickException(f"Submission {inbox_id} did not make a case: {row.last_error}. "
                                   f"The worker will retry it; see `flask inbox list`.")
    else:
        raise click.ClickException(f"Submission {inbox_id} did not make a case; it is {row.status}"
                                   + (f": {row.last_error}" if row.last_error else "")
                                   + ". See `flask inbox list`.")


@cases_cli.command("list")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), help="Only cases with this Status.")
def cases_list(status):
    """Cases and their state (no personal details)."""
    ctx = _ctx()
    names = {s.record_id: s.name for s in ctx.store.supporters()}
    cases = ctx.store.list_cases(status)
    if not cases:
        click.echo("No cases" + (f" with Status {status}." if status else "."))
        return
    _table(("Case", "Status", "Urgency", "For", "Institution", "Submitted", "Review due", "Supporter",
            "Offer expires", "Problems"), [
        (c.case_id, c.status, c.urgency, c.for_whom or "-", c.institution or "-", _fmt(c.submitted_at),
         _fmt(c.review_due), names.get(c.assigned_supporter, c.assigned_supporter) or "-", _fmt(c.offer_expires),
         c.problems or "") for c in cases])


def _case_id(ctx: Context, given: str) -> str:
    """PS-4821, ps-4821 or 4821 -> PS-4821."""
    prefix = ctx.program.program.case_prefix
    given = given.strip().upper()
    return given if given.startswith(prefix.upper() + "-") else f"{prefix}-{given}"


def _supporter_named(ctx: Context, name: str) -> Supporter:
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


@cases_cli.command("refer")
@click.argument("case_id")
@click.option("--resource", "names", metavar="NAME", multiple=True, required=True,
              help="A Resource of the case's institution, or a shared one, by name (repeat for several).")
def cases_refer(case_id, names):
    """Refer a case to third-tier Resources: Referred, and the requester gets a private link to them."""
    from workflows import followup
    ctx = _ctx()
    case_id = _case_id(ctx, case_id)
    case = ctx.store.find_case(case_id=case_id)
    if case is None:
        raise click.ClickException(f"No case {case_id}. See `flask cases list`.")
    try:
        chosen = followup.resources_named(ctx, case, list(names))
        case = followup.refer(ctx, case_id, [r.record_id for r in chosen], actor="cli")
    except (KeyError, ValueError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    sent = [m for m in ctx.db.ledger_rows(case_id) if m.kind.startswith("referral-")]
    how = {"sms": "SMS", "email": "email"}
    went = [how[m.channel] for m in sent if m.status != "failed"]
    click.echo(f"{case_id} is Referred to {', '.join(r.name for r in chosen)}; "
               + (f"the requester's private link went by {' and '.join(went)}." if went
                  else "the requester's link could not be sent: no phone or email that works."))


@cases_cli.command("withdraw")
@click.argument("case_id")
@click.option("--reason", default="no-longer-wanted", show_default=True,
              type=click.Choice(list(WITHDRAW_REASONS)),
              help="Why (a fixed word: no free text).")
def cases_withdraw(case_id, reason):
    """Withdraw a request: open offers and the supporter's and requester's links end at once."""
    from workflows import followup
    ctx = _ctx()
    case_id = _case_id(ctx, case_id)
    try:
        followup.withdraw(ctx, case_id, reason, actor="cli")
    except KeyError:
        raise click.ClickException(f"No case {case_id}. See `flask cases list`.") from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{case_id} is Withdrawn ({followup.WITHDRAW_REASONS[reason]}); any open offer was withdrawn "
               "and its links stopped working.")


@jobs_cli.command("run")
@click.argument("name", required=False)
def jobs_run(name):
    """Run a periodic job now (NAME, or `all` for each once); with no NAME, list them."""
    import peerline_root
    ctx = _ctx()
    jobs = tasks.periodic_jobs(refresh_webhooks=peerline_root.refresh_webhooks)
    if not name:
        _table(("Job", "Schedule", "What it does"), [
            (job, tasks.describe_schedule(schedule), " ".join((function.__doc__ or "").split()))
            for job, (function, schedule) in jobs.items()])
        return
    chosen = list(jobs) if name == "all" else [name]
    unknown = [n for n in chosen if n not in jobs]
    if unknown:
        raise click.ClickException(f"No job named {name!r}: one of {', '.join(jobs)}, or all.")
    failed = []
    for job in chosen:
        try:
            tasks.run_job(ctx, jobs[job][0])
            click.echo(f"Ran {job}.")
        except Exception as exc:
            from workflows.errors import describe_error
            failed.append(f"{job}: {describe_error(exc)}")
    if failed:
        raise click.ClickException("Failed: " + "; ".join(failed))


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
        times = f"at {when(o.offered_at)}" if o.status == BY_HAND else \
            f"offered {when(o.offered_at)}  due {when(o.expires_at)}"
        click.echo(f"offer {o.round}: {names.get(o.supporter_id, o.supporter_id)}  {o.status}  {times}")
    for m in ctx.db.ledger_rows(case.case_id):
        click.echo(f"message: {m.kind}  {m.channel}  to {m.recipient_role}  {m.status}")
    for e in ctx.store.list_events(case.case_id):
        click.echo(f"{when(e.at)}  {e.actor:<24}  {e.event}")


@flyers_cli.command("make")
@click.option("--institution", required=True, metavar="CODE", help="An institution code of program.toml, e.g. RRMC.")
@click.option("--unit", required=True, help='Where the flyer hangs, e.g. "4 North".')
@click.option("--form", type=click.Choice(sorted(flyers.FORM_CHOICES), case_sensitive=False), default="builtin",
              show_default=True, help="The form its QR code opens.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="flyers", show_default=True,
              help="Where to write the PDF and the QR code (PNG, SVG).")
def flyers_make(institution, unit, form, out_dir):
    """Make a flyer: a tag, a print-ready PDF (US Letter) and its QR code alone (PNG, SVG)."""
    from web import flyer_print
    ctx = _ctx()
    try:
        flyer = flyers.make_flyer(ctx, institution, unit, form)
    except flyers.FlyerError as exc:
        raise click.ClickException(f"No flyer made: {exc}.") from None
    crisis = ctx.program.crisis
    place = f"{ctx.program.institution_name(flyer.institution, flyer.institution)}, {flyer.unit}"
    files = flyer_print.render(out_dir, tag=flyer.tag, link=flyer.link, program_name=ctx.program.program.name,
                               crisis_national=crisis.national, crisis_emergency=crisis.emergency, place=place)
    click.echo(f"Flyer {flyer.tag} ({flyer.form} form): {flyer.link}")
    click.echo(f"  print: {files.pdf}")
    click.echo(f"  QR code alone: {files.png}, {files.svg}")


@flyers_cli.command("list")
def flyers_list():
    """Flyers, with their scans and submissions (cases whose Flyer is the tag)."""
    ctx = _ctx()
    made = ctx.store.flyers()
    if not made:
        click.echo("No flyers yet. Make one with `flask flyers make --institution CODE --unit NAME`.")
        return
    scans = ctx.db.flyer_scan_counts()
    cases_per_tag: dict[str, int] = {}
    for case in ctx.store.list_cases():
        if case.flyer:
            cases_per_tag[case.flyer] = cases_per_tag.get(case.flyer, 0) + 1
    _table(("Tag", "Institution", "Unit", "Form", "Scans", "Submissions", "Created", "Link"), [
        (f.tag, f.institution, f.unit, f.form, scans.get(f.tag, 0), cases_per_tag.get(f.tag, 0),
         _fmt(f.created_at), f.link) for f in made])


@click.command("sweep")
@with_appcontext
def sweep_cmd():
    """Queue every unfinished submission not already queued (the worker also does this every minute)."""
    click.echo(f"Queued {tasks.sweep(_ctx())} submissions.")


@purge_cli.command("run")
@click.option("--dry-run", is_flag=True, help="Only list what would go, by case reference and sink.")
def purge_run(dry_run):
    """Purge every case Closed or Withdrawn for retention_days (and declined colleague referrals
    at once) in every sink, each with a receipt Event. Exits 1 naming what is still pending."""
    from workflows import purge
    ctx = _ctx()
    if dry_run:
        lines = purge.dry_run(ctx)
        click.echo("\n".join(lines) if lines else "Nothing to purge.")
        return
    outcomes = purge.run(ctx)
    for o in outcomes:
        done = ", ".join(f"{purge.SINK_NAMES.get(s, s)} {n}" for s, n in o.removed.items()) or "nothing"
        click.echo(f"{o.case_id} ({o.reason}): removed from {done}"
                   + (f"; pending: {', '.join(o.pending)}" if o.pending else ""))
    if not outcomes:
        click.echo("Nothing to purge.")
    stuck = [o for o in outcomes if o.pending]
    if stuck:
        raise click.ClickException("not finished, retried on the next run: " + "; ".join(
            f"{o.case_id} {', '.join(o.pending)}" for o in stuck) + " (the log says why)")


def _log_level(_click_ctx, _param, verbose: bool) -> None:
    """Command output is for people: log lines (on stderr) only from WARNING up, unless -v.
    The web and worker processes keep app.py's INFO."""
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)


def add_verbose_option(command: click.Command) -> None:
    """Give every command (of groups too) -v/--verbose, which decides the log level."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_verbose_option(sub)
    elif not any(p.name == "verbose" for p in command.params):
        command.params.append(click.Option(["-v", "--verbose"], is_flag=True, expose_value=False,
                                           callback=_log_level, help="Also show INFO log lines (on stderr)."))


def _month(ctx_, param, value):
    if value is not None and not re.match(r"^\d{4}-(0[1-9]|1[0-2])$", value):
        raise click.BadParameter("a whole month: YYYY-MM")
    return value


@click.command("report")
@with_appcontext
@click.option("--from", "start", metavar="YYYY-MM", callback=_month, help="First whole month (program time zone).")
@click.option("--to", "end", metavar="YYYY-MM", callback=_month, help="Last whole month (included).")
@click.option("--csv", "as_csv", is_flag=True, help="measure,dimension,group,value, as /dashboard.csv.")
def report_cmd(start, end, as_csv):
    """The dashboard's numbers for a grant report (small numbers suppressed, as on /dashboard)."""
    from web.dashboard import csv_text
    from workflows import reports
    ctx = _ctx()
    if bool(start) != bool(end):
        d_start, d_end = reports.default_range(ctx.now(), ctx.program.program.tz)
        end = end or max(start, d_end)
        start = start or min(d_start, end)
    if start and end and start > end:
        raise click.BadParameter("--from is after --to")
    rep = reports.report_for(ctx, start, end)
    if as_csv:
        click.echo(csv_text(rep), nl=False)
        return
    click.echo(f"{ctx.program.program.name}: whole months {rep.start} to {rep.end}; "
               f"counts from 1 to {rep.threshold - 1} shown as <{rep.threshold}")
    for measure, dimension, rows in rep.tables():
        click.echo(f"\n{measure} by {dimension}")
        _table(("group", "value"), [(r.group, r.shown(rep.threshold)) for r in rows])


def init_app(app) -> None:
    """Register the commands; call after the integrations' `cli` groups are registered, so that
    their commands get -v/--verbose too."""
    for command in (roster_cli, inbox_cli, cases_cli, jobs_cli, purge_cli, flyers_cli, outbox_cmd, report_cmd):
        app.cli.add_command(command)
    inbox_cli.add_command(sweep_cmd)
    for command in app.cli.commands.values():
        add_verbose_option(command)
