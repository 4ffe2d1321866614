"""The program leads' dashboard (docs/architecture.md section 4; DESIGN section 7).

    GET /dashboard         HTML: every measure as a table with a CSS bar chart in it (no JavaScript)
    GET /dashboard.json    the same rows as JSON
    GET /dashboard.csv     measure,dimension,group,value (value: an integer or `<11`)

All three take `?from=YYYY-MM&to=YYYY-MM` (whole months, program time zone; by default the last
twelve whole months). Leads only: a coordinator gets 403. The page uses the console's sign-in
(signed out: a redirect to it); `.json` and `.csv` also take HTTP Basic with the same staff
account (email + password, the same hash and the same per-address wait after failures); signed
out or a wrong password: 401 with `WWW-Authenticate`. The numbers come from
`workflows.reports` with small numbers suppressed: no name, contact, free text or case reference.
"""
from __future__ import annotations

import csv
import io
import logging
import re

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request
from flask_login import current_user, login_required
from werkzeug.security import check_password_hash

from web import console
from workflows import reports

log = logging.getLogger("peerline.dashboard")

bp = Blueprint("dashboard", __name__)
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
REALM = 'Basic realm="Peerline dashboard", charset="UTF-8"'


@bp.after_request
def _private(response):
    return console._private(response)


@bp.context_processor
def _common():
    return console._common()


def _range() -> tuple[str | None, str | None]:
    start, end = request.args.get("from") or None, request.args.get("to") or None
    for value in (start, end):
        if value is not None and not MONTH.match(value):
            abort(400, "from and to are whole months: YYYY-MM")
    if start and end and start > end:
        abort(400, "from is after to")
    if bool(start) != bool(end):
        start, end = _fill(start, end)
    return start, end


def _fill(start, end):
    ctx = current_app.extensions["peerline"]
    d_start, d_end = reports.default_range(ctx.now(), ctx.program.program.tz)
    end = end or max(start, d_end)
    return start or min(d_start, end), end


def _report() -> reports.Report:
    start, end = _range()
    return reports.report_for(current_app.extensions["peerline"], start, end)


def _basic_user():
    """The lead or coordinator named by HTTP Basic, or None (then a 401 follows)."""
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        return None
    ctx, staff = current_app.extensions["peerline"], console._staff()
    email, now = auth.username.strip().lower()[:320], ctx.now()
    if staff.blocked_until(email, now):
        log.info("dashboard basic auth refused: waiting after failures")
        return None
    account = staff.by_email(email)
    good = check_password_hash(account.password_hash if account else console._DUMMY_HASH, auth.password or "")
    if not (account and good and not account.disabled):
        staff.record_failure(email, now, cap=console.FAILURE_CAP)
        log.info("dashboard basic auth refused")
        return None
    staff.clear_failures(email)
    return account


def _lead_for_data():
    """Session or HTTP Basic; returns an error response or None when a lead asks."""
    if request.authorization is not None:
        account = _basic_user()
        if account is None:
            return Response("sign in required\n", 401, {"WWW-Authenticate": REALM, "Content-Type": "text/plain"})
        role, who = account.role, account.id
    elif current_user.is_authenticated:
        role, who = current_user.role, current_user.staff_id
    else:
        return Response("sign in required\n", 401, {"WWW-Authenticate": REALM, "Content-Type": "text/plain"})
    if role != "lead":
        log.info("dashboard refused: not a lead staff=%s", who)
        return Response("program leads only\n", 403, {"Content-Type": "text/plain"})
    log.info("dashboard data staff=%s", who)
    return None


def csv_text(rep: reports.Report) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(reports.to_csv_rows(rep))
    return out.getvalue()


TITLES = {
    "requests": "Requests", "cases": "Cases", "crisis_requests": "Crisis requests",
    "median_hours_to_review": "Median hours to review (to the first offer)",
    "median_hours_to_accepted_offer": "Median hours to an accepted offer",
    "median_hours_to_contact": "Median hours to first contact",
    "reviews_within_window_percent": "Reviews within the review window (%)",
    "offers_declined": "Offers declined", "offers_expired": "Offers expired",
    "referrals": "Referrals to third-tier resources", "survey_answers": "Survey answers",
    "survey_respondents": "Survey respondents", "supporters_active": "Active supporters",
    "supporters_by_cases": "Supporters by accepted cases", "checkins_answered": "Supporter check-ins answered",
    "hard_checkins": "Hard check-ins (score 4 or 5)", "flyer_scans": "Flyer scans",
    "flyer_submissions": "Flyer submissions", "flyer_cases": "Cases from flyers",
}


def _charts(rep: reports.Report) -> list[dict]:
    charts = []
    for measure, dimension, rows in rep.tables():
        cells = [r for r in rows if r.group != reports.ALL]
        top = max([r.value for r in cells if r.value is not None] + [1])
        total = next((r for r in rows if r.group == reports.ALL), None)
        charts.append({
            "id": f"{measure}-{dimension}".replace(":", "-").replace("_", "-"),
            "title": TITLES.get(measure, measure.replace("_", " ").capitalize()),
            "dimension": dimension.replace("question:", "question: ").replace("_", " "),
            "total": total.shown(rep.threshold) if total else "",
            "rows": [{"group": r.group, "value": r.shown(rep.threshold),
                      "width": 0 if r.value is None else round(100 * r.value / top, 1)} for r in cells]})
    return charts


@bp.get("/dashboard")
@login_required
def page():
    if not current_user.is_lead:
        log.info("dashboard refused: not a lead staff=%s", current_user.staff_id)
        abort(403)
    rep = _report()
    log.info("dashboard page staff=%s", current_user.staff_id)
    return render_template("dashboard.html", rep=rep, charts=_charts(rep), suppressed=f"<{rep.threshold}")


@bp.get("/dashboard.json")
def as_json():
    refused = _lead_for_data()
    if refused is not None:
        return refused
    return jsonify(_report().as_dict())


@bp.get("/dashboard.csv")
def as_csv():
    refused = _lead_for_data()
    if refused is not None:
        return refused
    rep = _report()
    return Response(csv_text(rep), 200, {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="peerline-{rep.start}-to-{rep.end}.csv"'})


def init_app(app) -> None:
    app.register_blueprint(bp)
