"""GET /metrics (issue 15): bearer METRICS_TOKEN, counts and ids only."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import load_fixture
from test_intake import submit

TOKEN = "metrics-token-5b7e"
REDCAP = {"REDCAP_API_URL": "https://redcap.example.edu/api/", "REDCAP_API_TOKEN": "8F2A6C0E4B9D1F3A5C7E9B0D2F4A6C8E",
          "REDCAP_PROJECT_ID": "12", "REDCAP_WEBHOOK_TOKEN": "hook-token"}


@pytest.fixture
def overrides(overrides):
    return {**overrides, **REDCAP, "METRICS_TOKEN": TOKEN}


def scrape(client) -> str:
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_metrics_needs_the_bearer_token(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_metrics_is_404_when_no_token_is_set(overrides):
    from app import create_app
    app = create_app({**overrides, "METRICS_TOKEN": None})
    assert app.test_client().get("/metrics").status_code == 404


def test_metrics_count_webhooks_signature_failures_and_the_inbox_without_personal_data(client, ctx):
    ctx.clock.pin(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    raw, content_type = load_fixture("redcap", "det__survey_complete.txt")
    before = scrape(client)
    assert client.post("/webhooks/redcap?token=hook-token", data=raw, content_type=content_type).status_code == 200
    assert client.post("/webhooks/redcap?token=wrong", data=raw, content_type=content_type).status_code == 403
    assert submit(client).status_code == 303
    ctx.clock.advance(timedelta(minutes=10))
    text = scrape(client)

    def delta(name):
        old = value(before, name) if name.split("{")[0] in before and name in before else 0.0
        return value(text, name) - old
    assert delta('peerline_webhooks_total{source="redcap",status="200"}') == 1
    assert delta('peerline_webhooks_total{source="redcap",status="403"}') == 1
    assert delta('peerline_webhook_signature_failures_total{route="/webhooks/redcap"}') == 1
    assert value(text, "peerline_inbox_unfinished") == 2 and value(text, "peerline_inbox_parked") == 0
    assert value(text, "peerline_inbox_oldest_unfinished_age_seconds") == 600
    assert "Zebulon" not in text and "5550100123" not in text and "hook-token" not in text


def test_metrics_count_airtable_requests_and_429s(mocked):
    from integrations import airtable
    from tests.test_airtable import BASE, TOKEN as AT_TOKEN, URL
    from tests.fake_airtable import FakeAirtable
    fake = FakeAirtable(token=AT_TOKEN)
    fake.add_base(BASE)
    fake.install(mocked, URL)
    store = airtable.AirtableCaseStore(AT_TOKEN, BASE, api_url=URL, throttle=airtable.Throttle(0))
    store.throttle.sleep = lambda seconds: None
    airtable.init_base(store)
    from prometheus_client import REGISTRY

    def count(status):
        return REGISTRY.get_sample_value("peerline_airtable_requests_total", {"status": status}) or 0
    before_429, before_200 = count("429"), count("200")
    fake.refuse_next(BASE, 429, count=1)
    store.list_cases()
    assert count("429") == before_429 + 1 and count("200") > before_200
