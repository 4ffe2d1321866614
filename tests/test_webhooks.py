"""The one webhook skeleton (integrations/_webhooks.py): every webhook route goes through it,
and every WebhookError gets its documented answer from the one handler."""
from __future__ import annotations

import pytest

from integrations import _webhooks

ROUTES = {"/webhooks/qualtrics", "/webhooks/redcap", "/webhooks/airtable", "/webhooks/twilio/sms",
          "/webhooks/twilio/status", "/webhooks/sendgrid/events"}


def test_every_webhook_route_is_served_by_the_skeleton(app):
    served = {rule.rule: app.view_functions[rule.endpoint] for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/webhooks/")}
    assert set(served) == ROUTES
    for path, view in served.items():
        assert isinstance(getattr(view, "__self__", None), _webhooks.Webhook), path


@pytest.mark.parametrize("error,status,body,headers", [
    (_webhooks.NotConfigured("REDCap"), 404, {"error": "REDCap is not configured on this server"}, {}),
    (_webhooks.SignatureError("X-Twilio-Signature missing or wrong"), 403,
     {"error": "X-Twilio-Signature missing or wrong"}, {}),
    (_webhooks.Refused("unknown survey"), 403, {"error": "unknown survey"}, {}),
    (_webhooks.MalformedPayload("webhook.id", "missing"), 400, {"error": "webhook.id: missing", "field": "webhook.id"},
     {}),
    (_webhooks.PayloadTooLarge(), 413, {"error": "request body too large"}, {}),
    (_webhooks.Unavailable(), 503, {"error": "temporarily unavailable; please retry"}, {"Retry-After": "60"}),
])
def test_each_webhook_error_has_its_answer(app, client, error, status, body, headers):
    class Failing(_webhooks.Webhook):
        system = "test"

        def verify(self, ctx, request):
            raise error

    from flask import Blueprint
    bp = Blueprint("failing", __name__)
    Failing.route(bp, "/webhooks/failing")
    app.register_blueprint(bp)
    answer = client.post("/webhooks/failing")
    assert answer.status_code == status and answer.get_json() == body
    for name, value in headers.items():
        assert answer.headers[name] == value
