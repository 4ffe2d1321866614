"""The pages people open (docs/architecture.md section 2): one blueprint per page group, over
`templates/`. Pages call `workflows/` for program logic; `workflows/` never imports this package.
`register_pages(app)` is the one place they are added to the app."""
from __future__ import annotations


def register_pages(app) -> None:
    from web import body_limit, console, dashboard, flyers, home, ratelimit, request_form, resources, supporter, survey
    body_limit.init_app(app)    # 413 for any body over MAX_CONTENT_LENGTH, chunked or not
    ratelimit.init_app(app)     # first: the shared counter store every page's limiter uses
    home.init_app(app)          # `/` and the error pages (HTML for people, JSON for webhooks)
    request_form.init_app(app)  # `/request`
    supporter.init_app(app)     # `/s/<token>`
    resources.init_app(app)     # `/r/<token>`
    survey.init_app(app)        # `/survey/<token>`
    flyers.init_app(app)        # `/f/<tag>`, a flyer's QR code
    console.init_app(app)       # the staff console and `flask staff`
    dashboard.init_app(app)     # `/dashboard` (+ .json, .csv) for program leads
