"""Shared test fixtures.

- Every test gets its own DATA_DIR (SQLite files) and a clean environment: a developer's
  shell or .env cannot leak in.
- Outside HTTP is blocked: `responses` is active for every test, so an unmocked call fails.
- `app`/`client`/`ctx` build the real app; `drain(ctx)` runs the worker's work in-process.
- `pg_url` gives a fresh PostgreSQL database on the local server, or skips with the reason.
"""
from __future__ import annotations

import os
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import responses as responses_lib

from config import settings as settings_module

FIXTURES = Path(__file__).parent / "fixtures"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in settings_module.DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    # .env of the developer's checkout must not leak into tests.
    monkeypatch.setattr(settings_module, "load_dotenv", lambda *a, **k: False)
    yield


@pytest.fixture(autouse=True)
def block_network():
    """Any outside HTTP call not mocked by the test fails (responses raises ConnectionError)."""
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru(re.compile(r"http://(127\.0\.0\.1|localhost)(:\d+)?/"))
        yield rsps


@pytest.fixture
def mocked(block_network):
    """The active `responses` mock, to register outside API answers on."""
    return block_network


@pytest.fixture
def overrides(tmp_path):
    """Settings a test may extend before asking for `app`."""
    return {"DATA_DIR": str(tmp_path / "var"), "RATELIMIT_ENABLED": "false", "SECRET_KEY": "test-secret"}


@pytest.fixture
def app(overrides):
    from app import create_app
    from integrations import database
    application = create_app(overrides)
    application.config.update(TESTING=True)
    ctx = application.extensions["peerline"]
    ctx.queued = []
    ctx.enqueue = lambda inbox_id, **kw: ctx.queued.append(inbox_id)
    yield application
    database.dispose_engines()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def ctx(app):
    return app.extensions["peerline"]


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def roster(ctx):
    """The sample roster of four hospitals, loaded into the case store."""
    from cli import read_roster_csv
    loaded, errors = read_roster_csv(settings_module.ROOT / "config" / "sample_roster.csv")
    assert not errors
    ctx.store.import_roster(loaded)
    return loaded


def drain(ctx, *, advance=timedelta(hours=2), rounds=20) -> None:
    """Do what the worker would: process every unfinished inbox row, retries included
    (their backoff is skipped by looking `advance` into the future)."""
    for _ in range(rounds):
        ids = ctx.db.submissions_to_requeue(ctx.now() + advance, grace_seconds=0)
        if not ids:
            return
        from workflows import intake
        for inbox_id in ids:
            ctx.db._set_inbox(inbox_id, next_attempt_at=None)   # skip the backoff wait
            intake.process_submission(ctx, inbox_id)


@pytest.fixture
def run_worker(ctx):
    return lambda **kw: drain(ctx, **kw)


def load_fixture(system: str, name: str) -> tuple[bytes, str]:
    """A stored outside payload and its content type (.txt = form-encoded as sent)."""
    path = FIXTURES / system / name
    content_type = "application/json" if path.suffix == ".json" else "application/x-www-form-urlencoded"
    return path.read_bytes(), content_type


@pytest.fixture(scope="session")
def pg_server():
    """The local PostgreSQL server, or a skip saying why there is none."""
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True):
            pass
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(exc).__name__}); "
                    "start it (see .ci/run) to run the PostgreSQL tests")
    return PG_ADMIN_URL


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg
    name = f"peerline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    yield url
    from integrations import database
    database.dispose_engines()
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    """Our own database on each engine: SQLite in tmp_path, then a fresh PostgreSQL database.
    Waits up to 30 s, like the worker: tests that race many writers must not time out."""
    from integrations import database
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'peerline.db'}"
    else:
        url = settings_module.database_url({"DATABASE_URL": request.getfixturevalue("pg_url")})
    yield database.Database(url, wait_seconds=30)
    database.dispose_engines()


REDIS_HOST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture
def redis_url():
    """A Redis database of its own for one test (db 1-15, claimed with SET NX so that two test
    runs on one machine never share a queue), emptied before and after; or a skip saying why."""
    redis = pytest.importorskip("redis")
    claim = f"peerline-test-claim:{os.getpid()}:{uuid.uuid4().hex}"
    for db in range(1, 16):
        try:
            conn = redis.Redis.from_url(f"{REDIS_HOST_URL}/{db}", socket_connect_timeout=2)
            if conn.set("peerline-test-claim", claim, nx=True, ex=900):
                break
        except Exception as exc:  # pragma: no cover - depends on the machine
            pytest.skip(f"Redis not reachable at {REDIS_HOST_URL} ({type(exc).__name__}); "
                        "start it (see .ci/run) to run the Redis tests")
    else:  # pragma: no cover
        pytest.skip("every Redis database 1-15 is claimed by another test run")
    for key in conn.scan_iter():
        if key != b"peerline-test-claim":
            conn.delete(key)
    yield f"{REDIS_HOST_URL}/{db}"
    conn.flushdb()
