"""The pages a newcomer meets first: `/` and the error pages, each with 988 first."""
from __future__ import annotations

import logging

import pytest


def crisis_first(html: str, then: str) -> bool:
    return "988" in html and html.index("988") < html.index(then)


def test_landing_page_shows_988_first_then_what_peer_support_is_then_the_form_link(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert crisis_first(html, "<h1")
    assert html.index("<h1") < html.index("not therapy") < html.index('href="/request"')
    assert '<main' in html and 'lang="en"' in html and 'name="viewport"' in html


@pytest.mark.parametrize("method, path, code", [
    ("get", "/Zebulon-555-0123?name=Zebulon", 404),
    ("delete", "/request?name=Zebulon", 405),
])
def test_error_pages_for_people_show_the_crisis_line_first(client, method, path, code):
    page = getattr(client, method)(path)
    assert page.status_code == code and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert crisis_first(html, "<h1") and 'href="/"' in html
    assert "Zebulon" not in html and "0123" not in html      # nothing from the link repeated
    if code == 405:
        assert "GET" in page.headers["Allow"]


@pytest.mark.parametrize("method, path, code", [
    ("get", "/webhooks/nothing-here", 404),
    ("get", "/webhooks/twilio/sms", 405),
    ("post", "/healthz", 405),
])
def test_machine_routes_keep_answering_errors_as_json(client, method, path, code):
    answer = getattr(client, method)(path)
    assert answer.status_code == code
    assert answer.is_json and "error" in answer.get_json()


def test_a_500_page_shows_988_and_no_traceback_or_request_data(app, client, caplog):
    @app.get("/boom")
    def boom():
        raise ValueError("Zebulon typed this")

    with caplog.at_level(logging.ERROR):
        page = client.get("/boom?note=Zebulon")
    html = page.get_data(as_text=True)
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert crisis_first(html, "<h1")
    assert "Traceback" not in html and "Zebulon" not in html and "ValueError" not in html
    assert "Zebulon" not in caplog.text and "ValueError" in caplog.text


def test_a_500_on_a_webhook_is_json(app, client):
    @app.post("/webhooks/boom")
    def boom():
        raise RuntimeError("secret detail")

    answer = client.post("/webhooks/boom")
    assert answer.status_code == 500 and answer.is_json and "secret" not in answer.get_data(as_text=True)
