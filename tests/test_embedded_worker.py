"""The embedded worker (our database as the case store, the outbox as SMS and email): a routine
case is a handful of commits, not dozens; only the submission a 2xx acknowledges waits for the
disk; and a failure midway leaves nothing half written (issue 14)."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager

import sqlalchemy as sa

from workflows import intake

ROUTINE = {"for_whom": "Self", "requester_name": "Zebulon", "requester_phone": "+15550100123",
           "preferred_contact": "Text message", "institution": "NCH", "role": "Nurse", "urgency": "Routine"}


@contextmanager
def counting_commits(*engines):
    """Every commit of these engines while the block runs, as a list of the engine's ids."""
    seen: list = []
    listeners = [(engine, lambda conn, engine=engine: seen.append(engine)) for engine in engines]
    for engine, fn in listeners:
        sa.event.listen(engine, "commit", fn)
    try:
        yield seen
    finally:
        for engine, fn in listeners:
            sa.event.remove(engine, "commit", fn)


def submit(ctx, key: str, **changes) -> int:
    return ctx.db.record_submission(source="web", source_key=key, payload={"answers": {**ROUTINE, **changes}})[0]


def test_a_routine_case_is_at_most_ten_commits(ctx, roster):
    inbox_id = submit(ctx, "web:one")
    with counting_commits(ctx.db.engine, ctx.db.durable_engine) as commits:
        case_id = intake.process_submission(ctx, inbox_id)
    assert case_id and ctx.db.inbox_row(inbox_id).status == "done"
    # The case, its two Events, a new-case SMS and email to each NCH reviewer and program lead.
    assert len(ctx.store.list_events(case_id)) == 2 and len(ctx.db.outbox_list()) == 6
    assert len(commits) <= 10, len(commits)


def test_only_the_acknowledged_submission_waits_for_the_disk(ctx, roster):
    def synchronous(engine) -> int:
        with engine.connect() as conn:
            return conn.exec_driver_sql("PRAGMA synchronous").scalar()

    with counting_commits(ctx.db.engine, ctx.db.durable_engine) as commits:
        inbox_id = submit(ctx, "web:durable")
    assert commits == [ctx.db.durable_engine]          # the inbox row behind the 2xx
    assert synchronous(ctx.db.durable_engine) == 2     # FULL: on disk before we answer
    with counting_commits(ctx.db.engine, ctx.db.durable_engine) as commits:
        intake.process_submission(ctx, inbox_id)
    assert commits and set(commits) == {ctx.db.engine}
    assert synchronous(ctx.db.engine) == 1             # NORMAL (WAL): safe, no wait for the disk


def test_a_failure_midway_leaves_nothing_half_written_and_the_retry_does_it_once(ctx, roster, run_worker):
    inbox_id = submit(ctx, "web:midway")
    event_inserts = []

    def disk_full_after_the_messages(conn, cursor, statement, *_):
        # The last write of the run: "Reviewers notified", after every message went out.
        if statement.startswith("INSERT INTO events"):
            event_inserts.append(statement)
            if len(event_inserts) == 2:
                raise sqlite3.OperationalError("database or disk is full")

    sa.event.listen(ctx.db.engine, "before_cursor_execute", disk_full_after_the_messages)
    try:
        assert intake.process_submission(ctx, inbox_id) is None
    finally:
        sa.event.remove(ctx.db.engine, "before_cursor_execute", disk_full_after_the_messages)
    assert ctx.db.inbox_row(inbox_id).status == "retry"
    assert ctx.store.list_cases() == [] and ctx.db.outbox_list() == [] and ctx.db.ledger_rows() == []
    run_worker()
    [case] = ctx.store.list_cases()
    assert len(ctx.db.outbox_list()) == 6 and {m.status for m in ctx.db.ledger_rows()} == {"sent"}
    assert [e.event for e in ctx.store.list_events(case.case_id)] == ["Case created", "Reviewers notified"]

