"""The supporter's private page, `GET /s/<signed-token>`: how to reach the person whose request
they accepted, and what they do next (`POST /s/<signed-token>`, CSRF from the page, `action`):
`contact` (contact made, the same as DONE 4821), `unreachable` (they could not reach the
person: the case goes to the next candidate, or to the reviewers), `refer` (the Resources of
the requester's institution and the shared ones, checkboxes `resource`). The steps are
workflows/followup.py's. A page of the service's own, registered by `web.register_pages`.

The link reaches only the supporter who accepted (by SMS and email, workflows/offers.py). The
token is signed with SECRET_KEY and names one accepted offer, so one case, and when it stops
working (program.toml [offers] link_valid_hours). It also stops when the case is closed, purged
or given to someone else. Every opening is an Event on the case. The page is never cached and
sends no referrer; it works without JavaScript. Logs carry no token and no case detail: our
own never name it, and gunicorn's access log masks it when started with
`--logger-class web.supporter.AccessLogger`, as config/gunicorn.conf.py does (a token in a log
would let whoever reads the logs open the page while it works).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from flask import Blueprint, current_app, make_response, render_template, request
from flask_wtf.csrf import generate_csrf, validate_csrf
from gunicorn.glogging import Logger as GunicornLogger
from wtforms import ValidationError

from workflows import answers, followup, notify, phones
from web.headers import private

if TYPE_CHECKING:
    from workflows.context import Context

bp = Blueprint("supporter", __name__)

PREFERENCE_TEXT = {
    "role_preference": {"Same": "someone in the same role as them", "Different": "someone in a different role"},
    "department_preference": {"Same": "someone from their own department",
                              "Different": "someone from another department"},
}


ACTIONS = ("contact", "unreachable", "refer")


@bp.route("/s/<token>", methods=["GET", "POST"])
def supporter_page(token):
    ctx = current_app.extensions["peerline"]
    case, offer = answers.open_link(ctx, token)
    common = {"crisis": ctx.program.crisis, "program": ctx.program.program}
    done, error, status = "", "", 200
    if case is not None and request.method == "POST":
        done, error, status = _act(ctx, case, offer)
        case = ctx.store.find_case(case_id=case.case_id)
        if done == "handed back":
            case = None
    if case is None and done == "handed back":
        answer = make_response(render_template("supporter_done.html", **common), 200)
    elif case is None:
        answer = make_response(render_template("link_expired.html", **common), 410)
    else:
        answer = make_response(render_template("supporter.html", **common, **details(ctx, case, offer),
                                               done=done, error=error, csrf_token=generate_csrf,
                                               resources=followup.resources_for(ctx, case)), status)
    return private(answer)


def _act(ctx: Context, case, offer) -> tuple[str, str, int]:
    """One step from the page: (what was done, an error for the person, HTTP status)."""
    try:
        validate_csrf(request.form.get("csrf_token"))
    except ValidationError:
        return "", "The page was open too long: please try again.", 400
    action = request.form.get("action", "")
    try:
        if action == "contact":
            followup.record_contact(ctx, case, offer)
            return "contact", "", 200
        if action == "unreachable":
            followup.could_not_reach(ctx, case, offer)
            return "handed back", "", 200
        if action == "refer":
            followup.refer(ctx, case.case_id, request.form.getlist("resource"),
                           actor=f"supporter:{offer.supporter_id}")
            return "refer", "", 200
    except ValueError as exc:
        return "", str(exc), 409
    return "", "Choose what to do.", 400


def details(ctx: Context, case, offer) -> dict:
    """What the supporter needs to reach the person, and nothing more."""
    phone = phones.e164(case.requester_phone, phones.region(ctx.program))
    wishes = [PREFERENCE_TEXT[name][getattr(case, name)] for name in PREFERENCE_TEXT
              if getattr(case, name) in PREFERENCE_TEXT[name]]
    if case.outside_my_institution:
        wishes.append("someone from outside their hospital")
    return {
        "ref": case.ref, "first_name": case.requester_name or "(no name given)",
        "preferred": case.preferred_contact or "not given", "phone": case.requester_phone, "phone_link": phone,
        "email": case.requester_email, "for_colleague": case.for_whom == "Colleague",
        "role": case.role, "institution": ctx.program.institution_name(case.institution),
        "wishes": wishes, "urgency": case.urgency,
        "contact_by": notify.show_time(ctx, answers.contact_due(ctx, offer.answered_at, case.urgency)),
        "contacted": case.contact_made_at is not None, "status": case.status,
        "referred": set(followup.link_ids(case.tier3_referral)),
    }


TOKEN_IN_PATH = re.compile(r"/(s|r|survey)/[^/?\s]+")


def mask_token(text: str) -> str:
    """The token of a supporter (`/s/`), resources (`/r/`) or survey (`/survey/`) link masked."""
    return TOKEN_IN_PATH.sub(lambda m: f"/{m.group(1)}/<token>", text)


class AccessLogger(GunicornLogger):
    """gunicorn's logger, with the token of a supporter link masked wherever an access-log
    format could show it (request line, path, environ and header atoms)."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: mask_token(value) if isinstance(value, str) else value for key, value in atoms.items()}


def init_app(app) -> None:
    app.register_blueprint(bp)
