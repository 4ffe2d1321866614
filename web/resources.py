"""The requester's resources page, `GET /r/<signed-token>`: the third-tier Resources a supporter
or coordinator chose for them (name, phone, link, hours), under the crisis resources (988 first).

The link reaches the requester by their preferred channel (workflows/followup.py). Its token is
signed with SECRET_KEY and names one case (its id only) and when it stops working (program.toml
[followup] resources_link_valid_days); it also stops when the case is withdrawn or purged. Every
opening is an Event. Never cached, no referrer, no JavaScript; the access log masks the token
(web.supporter.AccessLogger).
"""
from __future__ import annotations

from flask import Blueprint, current_app, make_response, render_template

from workflows import followup
from web.headers import private

bp = Blueprint("resources", __name__)


@bp.get("/r/<token>")
def resources_page(token):
    ctx = current_app.extensions["peerline"]
    common = {"crisis": ctx.program.crisis, "program": ctx.program.program}
    chosen = followup.open_resources_link(ctx, token) if len(token) <= 400 else None
    if chosen is None:
        answer = make_response(render_template("link_expired.html", **common), 410)
    else:
        answer = make_response(render_template("resources.html", **common, resources=chosen))
    return private(answer)


def init_app(app) -> None:
    app.register_blueprint(bp)
