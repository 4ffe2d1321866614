"""The staff console: coordinators and program leads sign in and work their cases, on every
case store (SQLite, PostgreSQL, Airtable).

    GET/POST /console/login      POST /console/logout
    GET  /console                cases, crisis and overdue first; filters by status and institution
    GET  /console/cases/<id>     one case: preferences, problems, suggestions, offers, messages, Events
    POST /console/cases/<id>/<action>   approve | reassign | refer | withdraw | close | contact

Who sees what: a coordinator sees and acts on their institutions' cases only (any other case
is a 404, as if it did not exist); a program lead sees every case. Actions go through the same
workflow functions as `flask cases ...` and Airtable (workflows/offers.py), with the staff
member's email as the Event's Actor. Contact details are shown only after a POST ("Show
contact details"), and each showing is an Event naming the staff member.

Sign-in: Flask-Login over server-side sessions (integrations.database.StaffStore): the signed
cookie holds a random token, the database its SHA-256. A sign-in starts a new session (the old
cookie's contents are dropped); a session idle for `[console] idle_minutes` (program.toml,
default 30) ends, and so does every session of an account that is disabled. Sign-in attempts
are rate-limited per client address, and each email address typed waits 2^n seconds after n
failures (at most 15 minutes, so nobody can lock a lead out for good). A wrong email and a
wrong password get the same answer. Logs carry staff ids only: no email typed, no password,
no session token.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import (Blueprint, abort, current_app, flash, jsonify, make_response, redirect, render_template,
                   request, session, url_for)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import ValidationError

from integrations.database import StaffStore
from web.staff_cli import staff_cli
from workflows import followup, matching, notify, offers
from workflows.model import OPEN_STATUSES, STATUSES, Event
from workflows.records import BY_HAND, StaffAccount
from web import ratelimit
from web.headers import private

if TYPE_CHECKING:
    from config.program import Program
    from workflows.context import Context

log = logging.getLogger("peerline.console")

bp = Blueprint("console", __name__, url_prefix="/console")
login_manager = LoginManager()
limiter = Limiter(get_remote_address, default_limits=[], headers_enabled=True)
ratelimit.only_for_blueprints(limiter, bp.name)

LOGIN_RATE_LIMIT = "10 per minute;60 per hour"
FAILURE_CAP = timedelta(minutes=15)
ACTIONS = ("approve", "reassign", "refer", "withdraw", "close", "contact")
REVIEW_STATUSES = ("New", "Needs attention")
#: Compared against when the email has no account, so both answers take as long.
_DUMMY_HASH = generate_password_hash("peerline-no-such-account")


class StaffUser(UserMixin):
    """A signed-in staff member. Flask-Login's id is the session token, so ending the session
    row (sign-out, idle, disabled) ends the sign-in wherever the cookie is."""

    def __init__(self, account: StaffAccount, token: str):
        self.account, self.token = account, token
        self.staff_id, self.email, self.name = account.id, account.email, account.name
        self.role = account.role
        self.institutions = tuple(account.institutions.split())

    def get_id(self) -> str:
        return self.token

    @property
    def is_lead(self) -> bool:
        return self.role == "lead"

    def may_see(self, case) -> bool:
        return self.is_lead or (bool(case.institution) and case.institution in self.institutions)


def _ctx():
    return current_app.extensions["peerline"]


def _staff() -> StaffStore:
    return current_app.extensions["peerline_staff"]


def idle_limit(program: Program) -> timedelta:
    return timedelta(minutes=program.console.idle_minutes)


@login_manager.user_loader
def _load_user(token: str):
    ctx = _ctx()
    account = _staff().session_account(token, ctx.now(), idle_limit(ctx.program))
    return StaffUser(account, token) if account else None


@login_manager.unauthorized_handler
def _unauthorized():
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return jsonify(error="sign in required"), 401
    return redirect(url_for("console.login", next=request.path), 303 if request.method == "POST" else 302)


@bp.before_request
def _csrf_on_every_post():
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError:
            raise CSRFError("The page was open too long or its form is not ours: please try again.")


@bp.after_request
def _private(response):
    return private(response)


@bp.context_processor
def _common():
    ctx = _ctx()
    return {"crisis": ctx.program.crisis, "program": ctx.program.program,
            "institutions": ctx.program.institutions, "csrf_token": generate_csrf,
            "user": current_user, "program_idle": int(idle_limit(ctx.program).total_seconds() // 60)}


@bp.errorhandler(CSRFError)
def _csrf_refused(exc):
    log.info("console POST refused: CSRF token missing or wrong")
    return render_template("console/refused.html", message=exc.description), 400


# ---------------------------------------------------------------------------- sign-in

def _safe_next(target: str | None) -> str:
    """Only a console path of ours (no other host, no scheme)."""
    if target and target.startswith(("/console", "/dashboard")) and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("console.cases")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_RATE_LIMIT, methods=["POST"])
def login():
    ctx = _ctx()
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(url_for("console.cases"))
        return render_template("console/login.html", next=request.args.get("next", ""))
    email = (request.form.get("email") or "").strip().lower()[:320]
    password = request.form.get("password") or ""
    target = _safe_next(request.form.get("next"))
    now = ctx.now()
    blocked = _staff().blocked_until(email, now) if email else None
    if blocked:
        wait = max(1, int((blocked - now).total_seconds() + 59) // 60)
        log.info("console sign-in refused: waiting after failures")
        return render_template("console/login.html", next=target, email=email,
                               error=f"Too many attempts with this email. Please wait {wait} minute"
                                     f"{'s' if wait > 1 else ''} and try again."), 429
    account = _staff().by_email(email) if email else None
    good = check_password_hash(account.password_hash if account else _DUMMY_HASH, password)
    if not (account and good and not account.disabled):
        if email:
            _staff().record_failure(email, now, cap=FAILURE_CAP)
        log.info("console sign-in refused")
        return render_template("console/login.html", next=target, email=email,
                               error="That email and password do not match an active account."), 401
    _staff().clear_failures(email)
    if current_user.is_authenticated:
        _staff().end_session(current_user.token)
    session.clear()                                  # a new session: nothing of the old cookie is kept
    token = _staff().start_session(account.id, now)
    login_user(StaffUser(account, token))
    log.info("console sign-in staff=%s", account.id)
    return redirect(target, 303)


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        _staff().end_session(current_user.token)
        log.info("console sign-out staff=%s", current_user.staff_id)
    logout_user()
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("console.login"), 303)


# ---------------------------------------------------------------------------- the case list

def time_left(due: datetime | None, now: datetime) -> str:
    if due is None:
        return ""
    seconds = int((due - now).total_seconds())
    minutes = abs(seconds) // 60
    days, hours, mins = minutes // 1440, minutes % 1440 // 60, minutes % 60
    text = f"{days} d {hours} h" if days else (f"{hours} h {mins} min" if hours else f"{mins} min")
    return f"{text} left" if seconds >= 0 else f"overdue by {text}"


def is_overdue(case, now: datetime) -> bool:
    return case.status in REVIEW_STATUSES and case.review_due is not None and case.review_due < now


def _order(case, now: datetime):
    open_case = case.status in OPEN_STATUSES
    crisis = open_case and case.urgency == "Crisis"
    return (0 if crisis else 1 if is_overdue(case, now) else 2 if open_case else 3,
            {"Crisis": 0, "Urgent": 1}.get(case.urgency, 2),
            case.review_due or now)


@bp.get("")
@login_required
def cases():
    ctx, now = _ctx(), _ctx().now()
    status = request.args.get("status", "open")
    institution = request.args.get("institution", "")
    names = {s.record_id: s.name for s in ctx.store.supporters()}
    visible = [c for c in ctx.store.list_cases() if current_user.may_see(c)]
    if status == "open":
        shown = [c for c in visible if c.status in OPEN_STATUSES]
    elif status in STATUSES:
        shown = [c for c in visible if c.status == status]
    else:
        status, shown = "all", visible
    if institution:
        shown = [c for c in shown if c.institution == institution]
    rows = [{"case": c, "overdue": is_overdue(c, now),
             "review_due": notify.show_time(ctx, c.review_due) if c.review_due else "",
             "time_left": time_left(c.review_due, now) if c.status in REVIEW_STATUSES else "",
             "supporter": names.get(c.assigned_supporter, "") if c.status in ("Offered", "Assigned", "Contacted",
                                                                             "Referred") else "",
             "offered": c.status == "Offered"}
            for c in sorted(shown, key=lambda c: _order(c, now))]
    my_institutions = list(ctx.program.institutions) if current_user.is_lead else current_user.institutions
    return render_template("console/cases.html", rows=rows, status=status, institution=institution,
                           statuses=STATUSES, my_institutions=my_institutions)


# ---------------------------------------------------------------------------- one case

def _case_or_404(case_id: str):
    case = _ctx().store.find_case(case_id=case_id) if len(case_id) <= 20 else None
    if case is None or not current_user.may_see(case):
        abort(404)
    return case


def _candidates(ctx: Context, case, limit: int = 5):
    ruled_out = {o.supporter_id for o in ctx.db.offers_for_case(case.case_id) if o.status in offers.RULED_OUT}
    if case.status in ("Offered", "Assigned") and case.assigned_supporter:
        ruled_out.add(case.assigned_supporter)
    return matching.rank(case, ctx.store.supporters(), ctx.program, ctx.now(),
                         open_cases=ctx.db.open_case_counts(), excluded=ruled_out,
                         limit=limit, recent_cases=offers.recent_case_counts(ctx))


def _case_page(case, *, contact: bool = False, status: int = 200):
    ctx = _ctx()
    supporters = {s.record_id: s for s in ctx.store.supporters()}
    show = lambda when: notify.show_time(ctx, when) if when else ""  # noqa: E731
    offer_rows = [{"round": o.round, "supporter": getattr(supporters.get(o.supporter_id), "name",
                                                             "a supporter no longer in the roster"),
                   "status": o.status, "offered_at": show(o.offered_at),
                   "expires_at": "" if o.status == BY_HAND else show(o.expires_at),
                   "answered_at": show(o.answered_at)} for o in ctx.db.offers_for_case(case.case_id)]
    messages = [{"kind": m.kind, "channel": m.channel, "to": m.recipient_role, "status": m.status,
                 "sent_at": show(m.sent_at)} for m in ctx.db.ledger_rows(case.case_id)]
    events = [{"at": show(e.at), "event": e.event, "actor": e.actor} for e in ctx.store.list_events(case.case_id)]
    referrer = {label: getattr(case, name, "") for name, label in (
        ("referrer_name", "Name"), ("referrer_phone", "Phone"), ("referrer_email", "Email"))}
    page = render_template(
        "console/case.html", case=case, contact=contact, referrer=referrer if any(referrer.values()) else None,
        has_referrer_fields=hasattr(case, "referrer_name"),
        supporter=supporters.get(case.assigned_supporter), candidates=_candidates(ctx, case),
        offers=offer_rows, messages=messages, events=events,
        times={"submitted": show(case.submitted_at), "review_due": show(case.review_due),
               "time_left": time_left(case.review_due, ctx.now()) if case.status in REVIEW_STATUSES else "",
               "offer_expires": show(case.offer_expires), "contact_made": show(case.contact_made_at),
               "closed": show(case.closed_at)},
        overdue=is_overdue(case, ctx.now()),
        resources=followup.resources_for(ctx, case), withdraw_reasons=followup.WITHDRAW_REASONS,
        referred=[r.name for r in ctx.store.resources() if r.record_id in followup.link_ids(case.tier3_referral)],
        can={"refer": case.status in followup.REFERRABLE,
             "approve": case.status in ("New", "Needs attention", "Approved"),
             "reassign": case.status in ("Needs attention", "Approved", "Offered", "Assigned"),
             "withdraw": case.status not in ("Withdrawn", "Closed"),
             "close": case.status != "Closed"})
    return make_response(page, status)


@bp.get("/cases/<case_id>")
@login_required
def case(case_id):
    return _case_page(_case_or_404(case_id))


@bp.post("/cases/<case_id>/<action>")
@login_required
def act(case_id, action):
    if action not in ACTIONS:
        abort(404)
    ctx, case = _ctx(), _case_or_404(case_id)
    actor = current_user.email
    if action == "contact":
        ctx.store.add_events([Event(case.case_id, "Contact details shown in the console", at=ctx.now(),
                                           actor=actor)])
        log.info("console contact details shown case=%s staff=%s", case.case_id, current_user.staff_id)
        return _case_page(case, contact=True)
    try:
        message = _do(ctx, case, action, actor)
    except (ValueError, KeyError) as exc:
        flash(str(exc).strip("'\""), "error")
        log.info("console %s refused case=%s staff=%s", action, case.case_id, current_user.staff_id)
        return redirect(url_for("console.case", case_id=case.case_id), 303)
    log.info("console %s case=%s staff=%s", action, case.case_id, current_user.staff_id)
    flash(message)
    return redirect(url_for("console.case", case_id=case.case_id), 303)


def _chosen_supporter(ctx: Context, required: bool):
    record_id = request.form.get("supporter", "")
    if not record_id:
        if required:
            raise ValueError("Choose a supporter.")
        return None
    found = next((s for s in ctx.store.supporters() if s.record_id == record_id), None)
    if found is None:
        raise ValueError("That supporter is no longer in the roster: choose another.")
    return found


def _do(ctx: Context, case, action: str, actor: str) -> str:
    if action == "approve":
        if case.for_whom == "Colleague" and request.form.get("colleague_agreed") != "yes":
            raise ValueError(f"{case.case_id} was asked for by a colleague on someone's behalf: approve it only "
                             "once that person agreed to be contacted, and tick the box saying so.")
        result = offers.approve(ctx, case.case_id, supporter=_chosen_supporter(ctx, False), actor=actor)
        return _offer_result(ctx, case.case_id, result, "approved")
    if action == "reassign":
        result = offers.reassign(ctx, case.case_id, _chosen_supporter(ctx, True), actor=actor)
        return _offer_result(ctx, case.case_id, result, "reassigned")
    if action == "refer":
        followup.refer(ctx, case.case_id, request.form.getlist("resource"), actor=actor)
        return f"{case.case_id} is Referred; the requester's private link to those resources is on its way."
    if action == "withdraw":
        followup.withdraw(ctx, case.case_id, request.form.get("reason") or "no-longer-wanted", actor=actor)
        return f"{case.case_id} is Withdrawn; any open offer was withdrawn and the supporter's link stopped."
    offers.close(ctx, case.case_id, actor=actor)
    return f"{case.case_id} is Closed; any open offer was withdrawn and the supporter's link stopped."


def _offer_result(ctx: Context, case_id: str, result, done: str) -> str:
    case = ctx.store.find_case(case_id=case_id)
    if result == "offered":
        who = next((s.name for s in ctx.store.supporters() if s.record_id == case.assigned_supporter), "a supporter")
        return (f"{case_id} {done} and offered to {who} by SMS; the offer runs out "
                f"{notify.show_time(ctx, case.offer_expires)}.")
    if result == "needs a person":
        return (f"{case_id} {done}, but no supporter fits it: it is back in Needs attention and the reviewers "
                "were told. Choose a supporter below.")
    return f"{case_id} is {case.status}."


# ---------------------------------------------------------------------------- wiring

def init_app(app) -> None:
    """Register the console, its sign-in and `flask staff` (one call from app.py)."""
    app.extensions["peerline_staff"] = StaffStore(app.extensions["peerline"].db)
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config.get("REDIS_URL") or "memory://")
    limiter.init_app(app)
    ratelimit.hooks_on_blueprints(app, limiter, bp.name)
    app.register_blueprint(bp)
    app.cli.add_command(staff_cli)

