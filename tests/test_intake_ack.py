"""The acknowledgement of a submission (issue 14): a 2xx still means the submission is on disk
and queued (or left for the sweep), now that concurrent requests share commits (group commit)
and a routine submission may be queued just after its answer."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qsl, urlencode

import pytest
import sqlalchemy as sa

from config import settings as settings_module
from config.settings import ROOT
from integrations import database
from integrations.database.group_commit import GroupCommit

from conftest import FIXTURES


# ---------------------------------------------------------------------------- group commit

def queued_behind(group: GroupCommit, n: int) -> None:
    """Wait until `n` callers are queued behind the transaction being written."""
    deadline = time.monotonic() + 30
    while len(group._queue) < n:
        assert time.monotonic() < deadline, "callers never queued"
        time.sleep(0.001)


def in_threads(n: int, call) -> list:
    results: list = [None] * n

    def run(i):
        try:
            results[i] = call(i)
        except Exception as exc:
            results[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def test_callers_arriving_during_a_commit_share_the_next_one_and_each_gets_its_own_answer():
    transactions = []
    first_begun, others_queued = threading.Event(), threading.Event()

    def write(take):
        items = take()
        transactions.append(items)
        if len(transactions) == 1:      # the first commit is slow (waiting for the disk)
            first_begun.set()
            others_queued.wait(30)
        return [f"row {item}" for item in items]

    group = GroupCommit(write)
    threads, results = in_threads(1, lambda i: group.submit(0))
    first_begun.wait(30)
    more, more_results = in_threads(5, lambda i: group.submit(i + 1))
    queued_behind(group, 5)
    others_queued.set()
    for t in threads + more:
        t.join(30)
    assert results == ["row 0"] and more_results == [f"row {i}" for i in range(1, 6)]
    assert transactions == [[0], [1, 2, 3, 4, 5]]


def test_a_failed_commit_fails_each_of_its_callers_and_not_the_next_transaction():
    calls, release = [], threading.Event()

    def write(take):
        items = take()
        calls.append(items)
        if len(calls) == 1:
            release.wait(30)
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        return items

    group = GroupCommit(write)
    first, first_result = in_threads(1, lambda i: group.submit("a"))
    while not calls:
        time.sleep(0.001)
    later, later_results = in_threads(2, lambda i: group.submit(f"b{i}"))
    queued_behind(group, 2)
    release.set()
    for t in first + later:
        t.join(30)
    assert isinstance(first_result[0], sa.exc.OperationalError)
    assert later_results == ["b0", "b1"]


def test_after_commit_steps_run_once_each_and_a_failing_one_does_not_fail_the_answer(caplog):
    ran = []

    def then(result):
        ran.append(result)
        if result == 2:
            raise RuntimeError("queue refused")
    group = GroupCommit(lambda take: take())
    assert [group.submit(i, then) for i in range(3)] == [0, 1, 2]
    assert ran == [0, 1, 2] and "after-commit step failed" in caplog.text


# ---------------------------------------------------------------------------- the inbox

def test_a_burst_of_deliveries_is_each_answered_with_its_own_stored_row(db):
    """16 senders at once, four of them repeating another's key: 12 rows, each sender told
    its row, and a repeat told it is not new."""
    queued = []
    lock = threading.Lock()

    def on_new(inbox_id):
        with lock:
            queued.append(inbox_id)
    threads, results = in_threads(16, lambda i: db.record_submission(
        source="qualtrics", source_key=f"qualtrics:R_{i % 12}", payload={"n": i}, on_new=on_new))
    for t in threads:
        t.join(60)
    assert not [r for r in results if isinstance(r, Exception)], results
    rows = {r.source_key: r.id for r in db.list_inbox()}
    assert len(rows) == 12
    for i, (inbox_id, _new) in enumerate(results):
        assert inbox_id == rows[f"qualtrics:R_{i % 12}"]
    assert sum(new for _, new in results) == 12
    assert sorted(queued) == sorted(rows.values())      # each new row queued once


def test_the_inbox_commit_waits_for_the_disk_even_where_the_engine_does_not(tmp_path):
    """A 2xx promises the submission is on disk: the inbox's transaction runs with
    synchronous=FULL even on a connection of its engine set not to wait, and leaves that
    connection as it found it."""
    db = database.Database(f"sqlite:///{tmp_path / 'peerline.db'}")
    db.durable_engine.dispose()
    statements = []

    @sa.event.listens_for(db.durable_engine, "connect")
    def relaxed(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA synchronous=OFF")
        dbapi_conn.set_trace_callback(statements.append)

    db.record_submission(source="web", source_key="web:1", payload={})
    settings = [i for i, s in enumerate(statements) if s.upper().startswith("PRAGMA SYNCHRONOUS=")]
    commit = next(i for i, s in enumerate(statements) if s.upper() == "COMMIT")
    assert statements[max(i for i in settings if i < commit)].endswith("=2")    # FULL at commit
    with db.durable_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 0


@pytest.fixture
def overrides(overrides):
    return {**overrides, "QUALTRICS_WEBHOOK_TOKEN": "t", "QUALTRICS_API_URL": "http://127.0.0.1:9",
            "QUALTRICS_API_TOKEN": "unused"}


def notice(response_id: str) -> dict:
    raw = dict(parse_qsl((FIXTURES / "qualtrics" / "completed_response__plain.txt").read_text().strip()))
    return {**raw, "ResponseID": response_id}


def test_webhooks_open_no_new_database_connection_per_request(client, ctx):
    assert client.post("/webhooks/qualtrics?token=t", data=notice("R_conn0")).status_code == 200
    opened = []

    def count(*_):
        opened.append(1)
    sa.event.listen(sa.pool.Pool, "connect", count)
    try:
        for n in range(1, 13):
            assert client.post("/webhooks/qualtrics?token=t", data=notice(f"R_conn{n}")).status_code == 200
    finally:
        sa.event.remove(sa.pool.Pool, "connect", count)
    assert opened == [] and len(ctx.db.list_inbox()) == 13 and len(ctx.queued) == 13


# ---------------------------------------------------------------------------- the real server

@pytest.mark.slow
def test_an_acknowledged_notice_survives_the_server_being_killed_right_after_and_is_queued(tmp_path):
    """gunicorn as the Procfile runs it: the 200 for a Qualtrics notice, then kill -9 of every
    web process at once; the notice is in the inbox and in the queue."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in settings_module.DEFAULTS}
    env.update(DATA_DIR=str(tmp_path / "var"), SECRET_KEY="x", QUALTRICS_WEBHOOK_TOKEN="t",
               QUALTRICS_API_URL="http://127.0.0.1:9", QUALTRICS_API_TOKEN="unused",
               GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}")
    subprocess.run([sys.executable, "-m", "flask", "--app", "app", "inbox", "list"], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)   # the schema, before the workers start
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app:create_app()"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
                time.sleep(0.2)
        conn.request("POST", "/webhooks/qualtrics?token=t", body=urlencode(notice("R_killed1")),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert conn.getresponse().status == 200
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)

    values = settings_module.load({"DATA_DIR": str(tmp_path / "var")})
    db = database.Database(settings_module.database_url(values))
    [row] = db.list_inbox()
    assert (row.source_key, row.status) == ("qualtrics:R_killed1", "new")
    import peerline_root
    queue = peerline_root.queue(values)
    assert queue.huey.pending_count() == 1
    task = queue.huey.pending()[0]
    assert (task.name, task.args) == ("process_submission", (row.id,))


def test_on_postgresql_the_queue_does_not_wait_for_the_disk_and_the_inbox_does(pg_url, tmp_path):
    """Like the SQLite queue (synchronous=NORMAL), a queue entry is a courier the sweep can
    replace: its commit does not wait for the disk; the inbox's, which a 2xx promises, does."""
    import peerline_root
    values = settings_module.load({"DATABASE_URL": pg_url, "DATA_DIR": str(tmp_path / "var"), "SECRET_KEY": "x"})
    storage = peerline_root.queue(values).huey.storage
    with storage.db() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "off"
    storage.close()
    db = database.Database(settings_module.database_url(values))
    # This database's sessions default to not waiting; a trigger notes the setting in force
    # inside the inbox's own transaction.
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE seen_setting (value text)")
        conn.exec_driver_sql(
            "CREATE FUNCTION note_setting() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO seen_setting VALUES (current_setting('synchronous_commit')); RETURN NEW; END $$")
        conn.exec_driver_sql("CREATE TRIGGER note_setting AFTER INSERT ON inbox "
                             "FOR EACH ROW EXECUTE FUNCTION note_setting()")
        conn.exec_driver_sql(f'ALTER DATABASE "{pg_url.rsplit("/", 1)[1]}" SET synchronous_commit = off')
    database.dispose_engines()
    db = database.Database(settings_module.database_url(values))
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    db.record_submission(source="web", source_key="web:pg", payload={})
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT value FROM seen_setting").scalars().all() == ["on"]


def synchronous_at_each_commit(*engines) -> list[int]:
    """The SQLite `synchronous` level in force at each COMMIT on connections of `engines`
    checked out from now on (2 FULL: waits for the disk; 1 NORMAL), read from the statements
    each connection runs, whichever layer runs them."""
    seen: list[int] = []

    def watch(dbapi_conn, _record, _proxy):
        level = [dbapi_conn.execute("PRAGMA synchronous").fetchone()[0]]

        def trace(statement):
            text = statement.strip().upper()
            if text.startswith("PRAGMA SYNCHRONOUS="):
                level[0] = int(text.split("=", 1)[1])
            elif text == "COMMIT":
                seen.append(level[0])
        dbapi_conn.set_trace_callback(trace)

    for engine in set(engines):
        sa.event.listen(engine, "checkout", watch)
    return seen


def test_a_form_post_waits_for_the_disk_once_its_rate_limit_counts_do_not(overrides):
    """Two limits of two windows each are four counts per post; only the submission's own
    commit waits for the disk (a lost count harms nothing), and the limit still holds."""
    import re

    from app import create_app
    app = create_app({**overrides, "RATELIMIT_ENABLED": "true", "REQUEST_RATE_LIMIT": "2 per minute;30 per hour"})
    ctx = app.extensions["peerline"]
    ctx.enqueue = lambda *a, **k: None
    client = app.test_client()
    html = client.get("/request").get_data(as_text=True)
    hidden = {n: re.search(rf'name="{n}" type="hidden" value="([^"]*)"', html).group(1)
              for n in ("csrf_token", "flyer")}
    form = {"for_whom": "Self", "requester_name": "Ada", "requester_phone": "+1 555 010 0123",
            "preferred_contact": "Text message", "urgency": "Routine", **hidden}
    synchronous = synchronous_at_each_commit(ctx.db.engine, ctx.db.durable_engine)
    assert client.post("/request", data={**form, "submission_id": "a" * 32}).status_code == 303
    assert sorted(synchronous) == [1, 1, 1, 1, 2]          # four counts NORMAL, the inbox FULL
    assert client.post("/request", data={**form, "submission_id": "b" * 32}).status_code == 303
    assert client.post("/request", data={**form, "submission_id": "c" * 32}).status_code == 429
    assert len(ctx.db.list_inbox()) == 2
