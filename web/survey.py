"""The survey page, `GET, POST /survey/<signed-token>` (workflows/surveys.py): a short survey
from program.toml [survey], answered once by a requester or a supporter.

The token is signed with SECRET_KEY and names a survey invitation (never the case); it is the
page's only key, so a cross-site form cannot post to it without it. Answers are stored
without the case; a second answer is refused kindly ("already answered, thank you", 200). A
token that is not genuine gets the expired-link page (410). The page is never cached, sends
no referrer, and works without JavaScript. Logs carry the invitation id only; gunicorn's
access log masks the token (web.supporter.AccessLogger).
"""
from __future__ import annotations

from flask import Blueprint, current_app, make_response, render_template, request

from workflows import surveys
from web.headers import private

bp = Blueprint("survey", __name__)


@bp.route("/survey/<token>", methods=["GET", "POST"])
def survey_page(token):
    ctx = current_app.extensions["peerline"]
    common = {"crisis": ctx.program.crisis, "program": ctx.program.program}
    invitation = surveys.open_invitation(ctx, token)
    if invitation is None:
        answer = make_response(render_template("link_expired.html", **common), 410)
    elif invitation["answered_at"] is not None:
        answer = make_response(render_template("survey_done.html", **common, already=True))
    elif request.method == "POST":
        stored = surveys.submit(ctx, invitation, request.form)
        answer = make_response(render_template("survey_done.html", **common, already=not stored))
    else:
        answer = make_response(render_template("survey.html", **common, respondent=invitation["respondent"],
                                               questions=surveys.questions(ctx, invitation)))
    return private(answer)


def init_app(app) -> None:
    app.register_blueprint(bp)
