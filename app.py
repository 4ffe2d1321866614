"""Peerline's Flask application factory: the only way the app is built.

    flask --app app run            gunicorn 'app:create_app()'
"""
from __future__ import annotations

import logging

import hmac

from flask import Flask, Response, abort, jsonify, request
from werkzeug.middleware.proxy_fix import ProxyFix

from config import settings as settings_module


def create_app(overrides: dict | None = None) -> Flask:
    values = settings_module.load(overrides)
    app = Flask(__name__)
    app.config.update(values)
    app.config["MAX_CONTENT_LENGTH"] = int(values["MAX_CONTENT_LENGTH"])
    app.config["RATELIMIT_ENABLED"] = settings_module.flag(values, "RATELIMIT_ENABLED")
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = values["PUBLIC_BASE_URL"].startswith("https://")
    app.config["WTF_CSRF_TIME_LIMIT"] = 4 * 3600
    if int(values.get("PROXY_COUNT") or 0):
        n = int(values["PROXY_COUNT"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    import peerline_root
    from integrations import register_all

    app.extensions["peerline"] = peerline_root.context(values)
    register_all(app)

    import web
    web.register_pages(app)   # the pages people open: `/`, the error pages, /request, /s/, /console

    import cli
    cli.init_app(app)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        # Read-only and bounded (about 2 s): a locked or unreachable database is "unavailable".
        try:
            app.extensions["peerline"].db.ping()
        except Exception:
            return jsonify(status="unavailable"), 503, {"Retry-After": "60"}
        return jsonify(status="ready")

    @app.get("/metrics")
    def metrics():
        """Counts and ids only, for the operator's Prometheus: bearer METRICS_TOKEN; 404 when it
        is unset, 401 when the token is missing or wrong."""
        token = values.get("METRICS_TOKEN")
        if not token:
            abort(404)
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return jsonify(error="unauthorized"), 401, {"WWW-Authenticate": "Bearer"}
        from prometheus_client import CONTENT_TYPE_LATEST

        from integrations import _metrics
        body = _metrics.exposition(app.extensions["peerline"], queue_depth=lambda: _queue_depth(values))
        return Response(body, content_type=CONTENT_TYPE_LATEST)

    return app


def _queue_depth(values: dict) -> int:
    import peerline_root
    return peerline_root.queue(values).huey.pending_count()
