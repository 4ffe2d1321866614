"""Fuzz (issue 15; reliability.md section 5.2): every webhook route and the form, with valid and
invalid tokens/signatures and arbitrary bodies and content types, never answers 5xx."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOOK = "hook-token"
ROUTES = ["/webhooks/qualtrics", "/webhooks/redcap", "/webhooks/airtable", "/webhooks/twilio/sms",
          "/webhooks/twilio/status", "/webhooks/sendgrid/events", "/request"]


@pytest.fixture
def overrides(overrides):
    return {**overrides, "REDCAP_API_URL": "https://redcap.example.edu/api/", "REDCAP_API_TOKEN": "A" * 32,
            "REDCAP_PROJECT_ID": "12", "REDCAP_WEBHOOK_TOKEN": HOOK,
            "QUALTRICS_API_URL": "https://iad1.qualtrics.com", "QUALTRICS_API_TOKEN": "q" * 40,
            "QUALTRICS_WEBHOOK_TOKEN": HOOK, "AIRTABLE_WEBHOOK_SECRET": "c2VjcmV0",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t" * 32,
            "TWILIO_MESSAGING_SERVICE_SID": "MG" + "0" * 32, "PUBLIC_BASE_URL": "https://peerline.example.org"}


bodies = st.one_of(st.binary(max_size=2048),
                   st.dictionaries(st.text(max_size=30), st.text(max_size=60), max_size=8).map(
                       lambda d: "&".join(f"{k}={v}" for k, v in d.items()).encode("utf-8", "surrogatepass")),
                   st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                                max_leaves=20).map(lambda v: __import__("json").dumps(v).encode()))
content_types = st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain",
                                 "multipart/form-data; boundary=x", ""])
tokens = st.sampled_from([HOOK, "", "wrong", "%00", HOOK + "x"])
headers = st.dictionaries(st.sampled_from(["X-Twilio-Signature", "X-Airtable-Content-MAC",
                                           "X-Twilio-Email-Event-Webhook-Signature",
                                           "X-Twilio-Email-Event-Webhook-Timestamp"]),
                          st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
                          max_size=4)


@pytest.mark.parametrize("route", ROUTES)
def test_no_route_answers_5xx_to_anything(app, route):
    client = app.test_client()

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, content_type=content_types, token=tokens, extra=headers)
    def post(body, content_type, token, extra):
        answer = client.post(f"{route}?token={token}", data=body, content_type=content_type or None,
                             headers=extra)
        assert answer.status_code < 500, (route, answer.status_code)

    post()
