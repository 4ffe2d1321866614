"""`flask staff add|list|disable`: the console's accounts, kept in the service's own database.

    flask --app app staff add lead@example.org --name "Dana Lee" --role lead
    flask --app app staff add coord@example.org --name "Sam Roe" --role coordinator --institution RRMC
    echo "$PASSWORD" | flask --app app staff add ... --password-stdin
"""
from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup
from werkzeug.security import generate_password_hash

from integrations.database import StaffStore

if TYPE_CHECKING:
    from workflows.context import Context

ROLES = ("coordinator", "lead")
MIN_PASSWORD_LENGTH = 12
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

staff_cli = AppGroup("staff", help="Staff accounts for the console (coordinators and program leads).")


def _ctx():
    return current_app.extensions["peerline"]


def staff_store(ctx: Context) -> StaffStore:
    return StaffStore(ctx.db)


@staff_cli.command("add")
@click.argument("email")
@click.option("--name", required=True, help="The person's name, as shown in the console and its Events.")
@click.option("--role", required=True, metavar="coordinator|lead",
              help="coordinator: their institutions' cases; lead: every case.")
@click.option("--institution", "institutions", multiple=True, metavar="CODE",
              help="An institution code from program.toml (repeat for several); a coordinator needs one.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def staff_add(email, name, role, institutions, password_stdin):
    """Add a staff account; the password is asked for (never given on the command line)."""
    ctx = _ctx()
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise click.ClickException(f"{email!r} is not an email address.")
    if role not in ROLES:
        raise click.ClickException(f"Unknown role {role!r}: use coordinator or lead.")
    known = ctx.program.institutions
    codes = [c.strip().upper() for c in institutions]
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise click.ClickException(f"Unknown institution code {', '.join(unknown)}: the program's codes are "
                                   f"{', '.join(known)} (config/program.toml [institutions]).")
    if role == "coordinator" and not codes:
        raise click.ClickException("A coordinator needs at least one --institution CODE.")
    if staff_store(ctx).by_email(email):
        raise click.ClickException(f"An account with the email {email} already exists.")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters.")
    try:
        staff_store(ctx).add(email=email, name=name.strip(), role=role, institutions=list(dict.fromkeys(codes)),
                             password_hash=generate_password_hash(password), now=ctx.now())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    where = "every institution" if role == "lead" else ", ".join(codes)
    click.echo(f"Added {role} {email} ({where}). They sign in at {ctx.settings['PUBLIC_BASE_URL']}/console/login")


@staff_cli.command("list")
def staff_list():
    """Staff accounts: email, name, role, institutions, and whether disabled (no passwords)."""
    accounts = staff_store(_ctx()).all()
    if not accounts:
        click.echo("No staff accounts yet. Add one with `flask staff add EMAIL --name NAME --role lead`.")
    for a in accounts:
        where = "all" if a.role == "lead" else a.institutions
        click.echo(f"{a.email:<32}  {a.role:<11}  {where:<16}  {'disabled' if a.disabled else 'active':<8}  "
                   f"{a.name}")


@staff_cli.command("disable")
@click.argument("email")
def staff_disable(email):
    """Disable an account: it can no longer sign in, and its open sessions end at once."""
    if not staff_store(_ctx()).disable(email):
        raise click.ClickException(f"No staff account with the email {email.strip().lower()}. See `flask staff list`.")
    click.echo(f"Disabled {email.strip().lower()}; their sessions have ended.")
