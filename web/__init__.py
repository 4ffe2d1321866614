"""The pages people open (DESIGN.md section 2, `web/`): one blueprint per page group over
`templates/`. `register_pages(app)` is the one place they are added to the app."""
from __future__ import annotations


def register_pages(app) -> None:
    from web import home
    home.init_app(app)
