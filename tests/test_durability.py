"""Durability with the real worker: a huey consumer killed (SIGKILL) in the middle of its work
and restarted still turns every submission into exactly one case with each message once.

Runs the real `huey_consumer` process on each queue backend: SQLite (embedded), PostgreSQL
(inbox and queue in one database) and Redis (queue) with PostgreSQL (inbox).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from config import settings as settings_module
from config.settings import ROOT
from integrations import database

pytestmark = pytest.mark.slow

#: Enough that the first kill lands mid-flight: a worker drains a few hundred a second.
SUBMISSIONS = 120
ANSWERS = {"for_whom": "Self", "requester_name": "Test Participant", "requester_phone": "+15550100999",
           "preferred_contact": "Text message", "institution": "RRMC", "role": "Nurse", "urgency": "Routine"}


def start_worker(env) -> subprocess.Popen:
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "huey_consumer"), "peerline_root.huey",
         "--workers", "4", "--worker-type", "thread", "--delay", "0.05", "--max-delay", "0.2"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def backend_env(request, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in settings_module.DEFAULTS}
    env.update(DATA_DIR=str(tmp_path / "var"), SECRET_KEY="durability", INBOX_LEASE_SECONDS="2",
               RETRY_BASE_SECONDS="1", RETRY_MAX_ATTEMPTS="20")
    if request.param in ("postgres", "redis"):
        env["DATABASE_URL"] = request.getfixturevalue("pg_url")
    if request.param == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    return env


def test_killed_worker_loses_and_doubles_nothing(backend_env, roster_csv=ROOT / "config" / "sample_roster.csv"):
    values = settings_module.load({k: backend_env.get(k) for k in settings_module.DEFAULTS if backend_env.get(k)})
    from cli import read_roster_csv
    from integrations import build_context
    ctx = build_context(values)
    ctx.store.import_roster(read_roster_csv(roster_csv)[0])
    ids = [ctx.db.record_submission(source="web", source_key=f"web:crash-{n}", payload={"answers": ANSWERS})[0]
           for n in range(SUBMISSIONS)]
    # Queue them as the web process does, through the same code and settings.
    subprocess.run([sys.executable, "-c", "import sys, peerline_root; queue = peerline_root.queue(); "
                    "[queue.enqueue_submission(int(i)) for i in sys.argv[1:]]", *map(str, ids)],
                   cwd=ROOT, env=backend_env, check=True)

    rng = random.Random(4821)
    progress = []
    for _ in range(4):   # start, wait until it is busy, kill -9 mid-flight
        before = ctx.db.list_inbox(("done",))
        worker = start_worker(backend_env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(ctx.db.list_inbox(("done",))) == len(before):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.2))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        progress.append(Counter(r.status for r in ctx.db.list_inbox()))
    # The kills really landed mid-flight: rows were left claimed by a dead worker.
    assert any(p["processing"] for p in progress), progress
    time.sleep(2.1)      # the dead workers' leases run out
    worker = start_worker(backend_env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = ctx.db.list_inbox()
            if all(r.status == "done" for r in rows):
                break
            time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=20)

    rows = ctx.db.list_inbox()
    assert Counter(r.status for r in rows) == {"done": SUBMISSIONS}, [(r.status, r.attempts, r.last_error) for r in rows if r.status != "done"] + [
        (m.key, m.status, m.claimed_until) for m in ctx.db.ledger_rows() if m.status != "sent"] + [str(ctx.now())]
    cases = ctx.store.list_cases()
    assert len(cases) == SUBMISSIONS
    assert len({c.source_response_id for c in cases}) == SUBMISSIONS
    # RRMC has two reviewers and there is one program lead: SMS + email each, once.
    per_case = Counter(m.case_id for m in ctx.db.outbox_list(limit=10 * SUBMISSIONS))
    assert len(per_case) == SUBMISSIONS and set(per_case.values()) == {6}
    for case in cases:
        events = [e.event for e in ctx.store.list_events(case.case_id)]
        assert sorted(events) == ["Case created", "Reviewers notified"]
    database.dispose_engines()


def test_processes_starting_together_on_a_fresh_postgresql_database_all_boot(pg_url):
    """Two gunicorn workers and the worker used to race on CREATE TABLE (UniqueViolation on
    pg_type) and one failed to boot: each now waits its turn."""
    script = ("import sys; from integrations import database; "
              "database.Database(sys.argv[1]); print('ok')")
    url = settings_module.database_url({"DATABASE_URL": pg_url})
    starts = [subprocess.Popen([sys.executable, "-c", script, url], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=120) for p in starts]
    assert [p.returncode for p in starts] == [0] * 6, [err[-300:] for _, err in results if err]
