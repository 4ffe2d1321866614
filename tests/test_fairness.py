"""Fairness under a backlog: periodic jobs run ahead of routine cases, the sweep leaves rows
that are only waiting in a long queue alone, a crisis keeps the crisis lane through retries and
sweeps, and a Qualtrics or REDCap crisis is recognised as soon as its answers are read, ahead
of the routine work queued before it. Queues are real huey storages (SQLite, PostgreSQL,
Redis); the form systems are mocked at the HTTP layer.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import peerline_root
from conftest import load_fixture
from test_intake import GOOD
from workflows import inbox, intake, tasks

QUALTRICS_API = "https://iad1.qualtrics.com"
QUALTRICS_HOOK = "hook-token-4a7b9c2d8e1f6a3b5c7d9e0f"
QUALTRICS_RESPONSE = f"{QUALTRICS_API}/API/v3/surveys/SV_eA1b2C3d4E5f6G7/responses/R_3kFq8ZxW2mN9pLb"
REDCAP_API = "https://redcap.example.edu/api/"
REDCAP_HOOK = "hook-token-9d8c7b6a5f4e3d2c1b0a"
T0 = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)


@pytest.fixture
def overrides(overrides, request):
    """Qualtrics and REDCap configured; with the `twilio` mark, Twilio too (SMS then leave our
    database, so intake takes the per-case lock and commits step by step)."""
    if request.node.get_closest_marker("twilio"):
        overrides = {**overrides, "TWILIO_ACCOUNT_SID": "AC3f1c2b7e9d4a6b8c0d1e2f3a4b5c6d7e",
                     "TWILIO_AUTH_TOKEN": "test-auth-token-5f0e",
                     "TWILIO_MESSAGING_SERVICE_SID": "MG9a8b7c6d5e4f30211a2b3c4d5e6f7a8b"}
    return {**overrides, "INBOX_LEASE_SECONDS": "300",
            "QUALTRICS_API_URL": QUALTRICS_API, "QUALTRICS_API_TOKEN": "qualtrics-api-token",
            "QUALTRICS_WEBHOOK_TOKEN": QUALTRICS_HOOK,
            "REDCAP_API_URL": REDCAP_API, "REDCAP_API_TOKEN": "8F2A6C0E4B9D1F3A5C7E9B0D2F4A6C8E",
            "REDCAP_PROJECT_ID": "12", "REDCAP_WEBHOOK_TOKEN": REDCAP_HOOK}


def storages(tmp_path, request):
    """Each queue storage the root may build, by name."""
    yield "sqlite", peerline_root.make_huey({"DATA_DIR": str(tmp_path / "q")})
    pg_url = request.getfixturevalue("pg_url")
    yield "postgres", peerline_root.make_huey({"DATABASE_URL": pg_url, "DATA_DIR": str(tmp_path / "q")})
    redis_url = request.getfixturevalue("redis_url")
    yield "redis", peerline_root.make_huey({"REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "q")})


@pytest.fixture
def queue(ctx, tmp_path):
    """The real queue (huey on SQLite, as the embedded default), connected to `ctx` as the
    root connects it, and the tasks running on `ctx`."""
    q = tasks.register(peerline_root.make_huey({"DATA_DIR": str(tmp_path / "queue")}))
    ctx.enqueue = lambda inbox_id, **kw: q.enqueue_submission(inbox_id, **kw)
    tasks.use_context(ctx)
    yield q
    tasks.use_context(None)
    q.huey.flush()


def pending(q) -> list[tuple[str, tuple, int]]:
    """What the queue holds, in the order a worker takes it: (task, args, priority)."""
    return [(t.name, t.args, t.priority or 0) for t in sorted(
        q.huey.pending(), key=lambda t: -(t.priority or 0))]


def run_next(q) -> tuple[str, tuple]:
    """A worker takes the next task and runs it; returns its name and arguments."""
    task = q.huey.dequeue()
    q.huey.execute(task)
    return task.name, task.args


def test_periodic_jobs_run_after_crisis_work_and_before_routine_work_on_every_storage(tmp_path, request):
    at = datetime(2026, 11, 24, 4, 23)     # a minute at which every-minute and hourly jobs are due
    for name, huey in storages(tmp_path, request):
        q = tasks.register(huey)
        for inbox_id in (1, 2, 3):
            q.enqueue_submission(inbox_id)
        for job in huey.read_periodic(at):        # what the consumer's scheduler queues each minute
            huey.enqueue(job)
        q.run_soon("poll_approvals")               # an Airtable ping's nudge
        q.enqueue_submission(99, priority="crisis")
        taken = []
        while (task := huey.dequeue()) is not None:
            taken.append((task.name, task.args))
        jobs = {f.__name__ for f, schedule in tasks.PERIODIC if schedule(at)} | {"poll_approvals_now"}
        assert taken[0] == ("process_submission", (99,)), name
        assert {n for n, _ in taken[1:1 + len(jobs)]} == jobs, name
        assert taken[1 + len(jobs):] == [("process_submission", (i,)) for i in (1, 2, 3)], name
        huey.flush()


def test_the_sweep_leaves_a_row_queued_within_its_lease_alone(ctx, queue):
    ctx.clock.pin(T0)
    early, _ = inbox.record_and_enqueue(ctx, source="web", source_key="web:early", payload={"answers": GOOD})
    ctx.clock.advance(timedelta(seconds=301))
    late, _ = inbox.record_and_enqueue(ctx, source="web", source_key="web:late", payload={"answers": GOOD})
    assert tasks.sweep(ctx) == 1            # the one queued longer than the lease ago, unclaimed
    assert [args for _, args, _ in pending(queue)].count((early,)) == 2
    assert [args for _, args, _ in pending(queue)].count((late,)) == 1
    ctx.clock.advance(timedelta(seconds=60))
    assert tasks.sweep(ctx) == 0            # queued again a minute ago: waiting its turn


def test_a_row_the_queue_refused_is_queued_by_the_next_sweep(ctx, queue):
    ctx.clock.pin(T0)

    def refuse(inbox_id, **kw):
        raise ConnectionError("queue down")

    ctx.enqueue = refuse
    inbox_id, new = inbox.record_and_enqueue(ctx, source="web", source_key="web:refused",
                                             payload={"answers": {**GOOD, "urgency": "Crisis"}}, crisis=True)
    assert new
    ctx.enqueue = lambda i, **kw: queue.enqueue_submission(i, **kw)
    assert tasks.sweep(ctx) == 1
    assert pending(queue) == [("process_submission", (inbox_id,), tasks.PRIORITY_CRISIS)]


@pytest.mark.twilio
@pytest.mark.parametrize("source", ["web", "qualtrics"])
def test_a_crisis_retried_or_swept_stays_in_the_crisis_lane(ctx, roster, queue, mocked, client, source):
    """The case's lock is held elsewhere, so the run fails after the answers are read: the retry
    the queue schedules, and the sweep's copy once it is due, are crisis work."""
    ctx.clock.pin(T0)
    if source == "web":
        inbox_id, _ = inbox.record_and_enqueue(ctx, source="web", source_key="web:crisis-retry",
                                               payload={"answers": {**GOOD, "urgency": "Crisis"}}, crisis=True)
    else:
        answers = json.loads(load_fixture("qualtrics", "response__complete.json")[0])
        answers["result"]["values"]["QID13"] = 3      # "Crisis"
        mocked.get(QUALTRICS_RESPONSE, json=answers)
        body, content_type = load_fixture("qualtrics", "completed_response__plain.txt")
        assert client.post(f"/webhooks/qualtrics?token={QUALTRICS_HOOK}", data=body,
                           content_type=content_type).status_code == 200
        [row] = ctx.db.list_inbox()
        inbox_id = row.id
    key = ctx.db.inbox_row(inbox_id).source_key
    queue.huey.flush()
    with ctx.db.lock(f"case:{key}", ttl_seconds=600, wait_seconds=0):
        ctx.settings["INBOX_LEASE_SECONDS"] = "1"     # the case lock is waited for at most a lease
        try:
            intake.process_submission(ctx, inbox_id, triage=True)
        finally:
            ctx.settings["INBOX_LEASE_SECONDS"] = "300"
    row = ctx.db.inbox_row(inbox_id)
    assert (row.status, row.priority) == ("retry", "crisis")
    [retry] = queue.huey.pending()                   # huey holds it until its eta
    assert (retry.args, retry.priority, retry.eta is not None) == ((inbox_id,), tasks.PRIORITY_CRISIS, True)

    queue.huey.flush()                                # the queue lost it
    ctx.clock.advance(timedelta(seconds=30 + 301))    # due, and unclaimed for longer than a lease
    assert tasks.sweep(ctx) == 1
    assert pending(queue) == [("process_submission", (inbox_id,), tasks.PRIORITY_CRISIS)]


def _qualtrics_notice(client, mocked, urgency_code: int) -> None:
    answers = json.loads(load_fixture("qualtrics", "response__complete.json")[0])
    answers["result"]["values"]["QID13"] = urgency_code
    mocked.get(QUALTRICS_RESPONSE, json=answers)
    body, content_type = load_fixture("qualtrics", "completed_response__plain.txt")
    assert client.post(f"/webhooks/qualtrics?token={QUALTRICS_HOOK}", data=body,
                       content_type=content_type).status_code == 200


def _redcap_notice(client, mocked, urgency_code: int) -> None:
    records = json.loads(load_fixture("redcap", "records__complete.json")[0])
    records[0]["urgency"] = str(urgency_code)
    mocked.add("POST", REDCAP_API, json=records)
    body, content_type = load_fixture("redcap", "det__survey_complete.txt")
    assert client.post(f"/webhooks/redcap?token={REDCAP_HOOK}", data=body,
                       content_type=content_type).status_code == 200


NOTICES = {"qualtrics": _qualtrics_notice, "redcap": _redcap_notice}


def _routine_backlog(ctx, n: int) -> list[int]:
    return [inbox.record_and_enqueue(ctx, source="web", source_key=f"web:backlog-{i}",
                                     payload={"answers": {**GOOD, "requester_name": f"Backlog {i}"}})[0]
            for i in range(n)]


@pytest.mark.parametrize("source", ["qualtrics", "redcap"])
def test_a_form_crisis_is_escalated_before_the_routine_work_queued_ahead_of_it(ctx, roster, queue, mocked,
                                                                               client, source):
    ctx.clock.pin(T0)
    _routine_backlog(ctx, 3)
    NOTICES[source](client, mocked, 3)                # the answers say Crisis; the notice cannot
    [notice] = [r.id for r in ctx.db.list_inbox() if r.source == source]
    assert run_next(queue) == ("process_submission", (notice,))   # the worker's next task
    [case] = ctx.store.list_cases()                   # no routine case yet
    assert (case.source, case.urgency) == (source, "Crisis")
    on_call = {r.phone for r in roster.reviewers if r.on_call}
    crisis_sms = {m.recipient for m in ctx.db.outbox_list() if m.channel == "sms" and "URGENT" in m.body}
    assert on_call and on_call <= crisis_sms
    assert ctx.db.inbox_row(notice).priority == "crisis"
    assert [args for _, args, _ in pending(queue)] == [(i,) for i in (1, 2, 3)]


@pytest.mark.parametrize("source", ["qualtrics", "redcap"])
def test_a_routine_form_notice_is_read_ahead_then_waits_behind_the_routine_work(ctx, roster, queue, mocked,
                                                                                 client, source):
    ctx.clock.pin(T0)
    backlog = _routine_backlog(ctx, 3)
    NOTICES[source](client, mocked, 1)                # Routine
    [notice] = [r.id for r in ctx.db.list_inbox() if r.source == source]
    run_next(queue)
    assert ctx.store.list_cases() == []
    row = ctx.db.inbox_row(notice)
    assert (row.status, row.priority, row.attempts) == ("new", "routine", 0)
    assert pending(queue) == [("process_submission", (i,), 0) for i in (*backlog, notice)]
    ran = [run_next(queue) for _ in range(queue.huey.pending_count())]
    assert ran == [("process_submission", (i,)) for i in (*backlog, notice)]
    assert len(ctx.store.list_cases()) == 4
    assert {r.status for r in ctx.db.list_inbox()} == {"done"}
