"""The benchmark's baseline: a bare Flask app whose route does nothing but answer 200."""
from flask import Flask


def create_app():
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz():
        return "ok"

    @app.post("/bare")
    def bare():
        return "", 200

    return app
