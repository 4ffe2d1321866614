"""Issue 15, "fail fast and loud": a database out of reach answers 503 with Retry-After within
DATABASE_WAIT_SECONDS (never a 500, never a hang); a body over MAX_CONTENT_LENGTH is 413 with or
without Content-Length.

The database is made unreachable for real: a second connection holds SQLite's write lock
(`BEGIN IMMEDIATE` on the same file), or holds an exclusive lock on a PostgreSQL table. Times
are only "not 30 s" bounds. reliability.md section 7: the DB-unavailable path (note under the
table) and case 8 (chunked body).
"""
from __future__ import annotations

import io
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import load_fixture
from test_intake import GOOD, get_form

REDCAP = {"REDCAP_API_URL": "https://redcap.example.edu/api/", "REDCAP_API_TOKEN": "8F2A6C0E4B9D1F3A5C7E9B0D2F4A6C8E",
          "REDCAP_PROJECT_ID": "12", "REDCAP_WEBHOOK_TOKEN": "hook-token"}


@pytest.fixture
def overrides(overrides):
    return {**overrides, **REDCAP}


@contextmanager
def sqlite_write_lock(ctx):
    """Another process's writer: a second connection holding BEGIN IMMEDIATE on the file."""
    path = ctx.db.url.split("///", 1)[1]
    other = sqlite3.connect(path, isolation_level=None, timeout=1)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def post_trigger(client, body: bytes | None = None):
    raw, content_type = load_fixture("redcap", "det__survey_complete.txt")
    return client.post("/webhooks/redcap?token=hook-token", data=body if body is not None else raw,
                       content_type=content_type)


def timed(call):
    start = time.monotonic()
    answer = call()
    return answer, time.monotonic() - start


def test_webhook_while_the_database_is_locked_is_503_with_retry_after_within_the_wait(client, ctx):
    with sqlite_write_lock(ctx):
        answer, seconds = timed(lambda: post_trigger(client))
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert answer.is_json and seconds < 15          # DATABASE_WAIT_SECONDS=5, not SQLite's old 30 s
    assert ctx.db.list_inbox() == [] and ctx.queued == []
    assert post_trigger(client).status_code == 200   # the sender's retry is taken once the lock is gone


def test_request_form_post_while_the_database_is_locked_is_a_503_page_with_988_first(client, ctx):
    _, hidden = get_form(client)
    with sqlite_write_lock(ctx):
        answer, seconds = timed(lambda: client.post("/request", data={**hidden, **GOOD}))
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0 and seconds < 15
    html = answer.get_data(as_text=True)
    assert "988" in html and html.index("988") < html.index("try again")
    assert "Zebulon" not in html and ctx.db.list_inbox() == []


def test_console_sign_in_while_the_database_is_locked_is_503_not_500(client, ctx):
    import re
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    with sqlite_write_lock(ctx):
        answer, seconds = timed(lambda: client.post("/console/login", data={
            "csrf_token": token, "email": "lead@example.org", "password": "x" * 12}))
    assert answer.status_code == 503 and "Retry-After" in answer.headers and seconds < 15
    assert "988" in answer.get_data(as_text=True)


def test_readyz_is_read_only_and_answers_within_2_seconds_while_a_writer_holds_the_lock(client, ctx):
    with sqlite_write_lock(ctx):
        answer, seconds = timed(lambda: client.get("/readyz"))
    assert answer.status_code == 200 and seconds < 2 + 1   # a read needs no write lock (WAL)


def test_readyz_on_a_database_that_is_gone_is_503_within_2_seconds_and_creates_nothing(client, ctx):
    path = Path(ctx.db.url.split("///", 1)[1])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    answer, seconds = timed(lambda: client.get("/readyz"))
    assert answer.status_code == 503 and answer.is_json and seconds < 3
    assert not path.exists()


def test_the_worker_waits_longer_than_a_web_request(monkeypatch, tmp_path):
    import peerline_root
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("WORKER_DATABASE_WAIT_SECONDS", "12")
    worker = peerline_root.worker_context()
    assert worker.settings["DATABASE_WAIT_SECONDS"] == "12"
    assert worker.db.engine.dialect.name == "sqlite"
    with worker.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 12000


# ---------------------------------------------------------------------------- PostgreSQL

@pytest.fixture
def pg_overrides(overrides, pg_url):
    return {**overrides, "DATABASE_URL": pg_url}


def test_postgres_locked_table_is_503_within_the_wait(pg_url, tmp_path):
    import psycopg

    from app import create_app
    app = create_app({"DATA_DIR": str(tmp_path / "var"), "RATELIMIT_ENABLED": "false",
                      "SECRET_KEY": "test-secret", "DATABASE_URL": pg_url, **REDCAP})
    ctx = app.extensions["peerline"]
    ctx.enqueue = lambda *a, **k: None
    client = app.test_client()
    with psycopg.connect(pg_url) as other:
        other.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        answer, seconds = timed(lambda: post_trigger(client))
        other.rollback()
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0 and seconds < 15
    assert post_trigger(client).status_code == 200


def test_postgres_on_a_closed_port_fails_within_the_wait():
    import sqlalchemy as sa

    from integrations.database import engine as engine_module
    engine = engine_module._make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none", 5.0)
    start = time.monotonic()
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()
    assert time.monotonic() - start < 10
    start = time.monotonic()
    with pytest.raises(sa.exc.OperationalError):
        engine_module.ping("postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert time.monotonic() - start < 3


# ---------------------------------------------------------------------------- body size (case 8)

def chunked(client, path: str, body: bytes, content_type="application/x-www-form-urlencoded"):
    """A body without Content-Length, as a WSGI server passes a chunked request."""
    return client.post(path, input_stream=io.BytesIO(body), content_type=content_type,
                       environ_overrides={"wsgi.input_terminated": True})


def test_chunked_redcap_trigger_over_the_limit_is_413_and_not_recorded(client, ctx):
    raw, _ = load_fixture("redcap", "det__survey_complete.txt")
    answer = chunked(client, "/webhooks/redcap?token=hook-token", raw + b"&pad=" + b"a" * 3_000_000)
    assert answer.status_code == 413 and answer.is_json
    assert ctx.db.list_inbox() == [] and ctx.queued == []


def test_chunked_trigger_within_the_limit_is_taken(client, ctx):
    raw, _ = load_fixture("redcap", "det__survey_complete.txt")
    assert chunked(client, "/webhooks/redcap?token=hook-token", raw).status_code == 200
    assert len(ctx.db.list_inbox()) == 1


def test_chunked_form_post_over_the_limit_is_the_413_page(client, ctx):
    _, hidden = get_form(client)
    from urllib.parse import urlencode
    body = urlencode({**hidden, **GOOD}).encode() + b"&x=" + b"a" * 300_000
    answer = chunked(client, "/request", body)
    assert answer.status_code == 413 and "988" in answer.get_data(as_text=True)
    assert ctx.db.list_inbox() == []


def test_chunked_body_over_the_limit_is_413_under_gunicorn(tmp_path):
    """The real server: gunicorn passes a chunked body without Content-Length."""
    import http.client
    import os
    import socket
    import subprocess
    import sys

    from config.settings import ROOT
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DATA_DIR": str(tmp_path / "var"), "SECRET_KEY": "x", "RATELIMIT_ENABLED": "false",
           **REDCAP}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}",
                               "app:create_app()"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
                time.sleep(0.2)
        raw, content_type = load_fixture("redcap", "det__survey_complete.txt")

        def send(body: bytes) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/webhooks/redcap?token=hook-token", encode_chunked=True,
                             body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                             headers={"Content-Type": content_type})
                return conn.getresponse().status
            except (ConnectionResetError, BrokenPipeError):   # closed on us mid-body: also refused
                return 413
            finally:
                conn.close()

        assert send(raw + b"&pad=" + b"a" * 3_000_000) == 413
        from integrations import database
        db = database.Database(f"sqlite:///{tmp_path / 'var' / 'peerline.db'}")
        assert db.list_inbox() == []
    finally:
        server.terminate()
        server.wait(timeout=30)
