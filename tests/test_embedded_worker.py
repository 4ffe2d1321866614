"""The embedded worker (our database as the case store, the outbox as SMS and email): a routine
case is a handful of commits, not dozens; only the submission a 2xx acknowledges waits for the
disk; a failure midway leaves nothing half written; and Case IDs are unique by the database,
short, and typed back in an SMS (issue 14)."""
from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from integrations import database
from workflows import intake, offers, sms_commands
from workflows.model import Roster

ROUTINE = {"for_whom": "Self", "requester_name": "Zebulon", "requester_phone": "+15550100123",
           "preferred_contact": "Text message", "institution": "NCH", "role": "Nurse", "urgency": "Routine"}


@contextmanager
def counting_commits(*engines):
    """Every COMMIT on connections of these (SQLite) engines while the block runs, as a list
    of the engines, read from the statements the connections run, whichever layer runs them
    (the inbox insert commits on the driver's connection, not through SQLAlchemy)."""
    seen: list = []

    def watching(engine):
        def checkout(dbapi_conn, _record, _proxy):
            dbapi_conn.set_trace_callback(lambda s: seen.append(engine) if s.strip().upper() == "COMMIT" else None)
        return checkout

    def checkin(dbapi_conn, _record):
        dbapi_conn.set_trace_callback(None)
    listeners = [(engine, "checkout", watching(engine)) for engine in engines] + \
                [(engine, "checkin", checkin) for engine in engines]
    for engine, name, fn in listeners:
        sa.event.listen(engine, name, fn)
    try:
        yield seen
    finally:
        for engine, name, fn in listeners:
            sa.event.remove(engine, name, fn)


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
        # The case's Events ("Case created", "Reviewers notified") are written in one go,
        # after every message went out: the last write of the run.
        if statement.startswith("INSERT INTO events"):
            event_inserts.append(statement)
            if len(event_inserts) == 1:
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


def test_a_reviewer_who_texted_stop_gets_no_sms_and_a_replay_sends_nothing_again(ctx, roster):
    ctx.db.opt_out("sms", "+15550101127", source="STOP")     # Robin Asante, an NCH reviewer
    inbox_id = submit(ctx, "web:stop")
    case_id = intake.process_submission(ctx, inbox_id)

    def new_case_messages():
        return sorted(m.recipient for m in ctx.db.outbox_list() if ":new_case:" in m.message_key)

    sent = new_case_messages()
    assert "+15550101127" not in sent and "robin.asante@example.org" in sent and len(sent) == 5
    [refused] = [m for m in ctx.db.ledger_rows(case_id) if m.status == "failed"]
    assert refused.channel == "sms" and refused.error == "opted out (STOP)"
    assert ctx.db.reopen_submission(inbox_id)               # `flask inbox replay`
    assert intake.process_submission(ctx, inbox_id) == case_id
    assert new_case_messages() == sent


def test_a_roster_change_reaches_new_cases_within_a_second_and_at_once_from_this_process(ctx, roster):
    from integrations.database import store as store_module
    clock = [1000.0]
    ctx.store.monotonic = lambda: clock[0]

    def sms_numbers(case_id):
        return {m.recipient for m in ctx.db.outbox_list() if m.case_id == case_id and m.channel == "sms"}

    assert "+15550101127" in sms_numbers(intake.process_submission(ctx, submit(ctx, "web:first")))
    # Another process (`flask roster import` elsewhere) gives Robin Asante, an NCH reviewer, a new number.
    other = sa.create_engine(ctx.db.url)
    with other.begin() as conn:
        conn.execute(database.reviewers.update().where(database.reviewers.c.name == "Robin Asante")
                     .values(phone="+15550101190"))
    other.dispose()
    clock[0] += store_module.ROSTER_CACHE_SECONDS
    assert "+15550101190" in sms_numbers(intake.process_submission(ctx, submit(ctx, "web:a-second-later")))
    # A change made by this process reaches the very next case.
    [robin] = [r for r in roster.reviewers if r.name == "Robin Asante"]
    ctx.store.import_roster(Roster(reviewers=[dataclasses.replace(robin, phone="+15550101191")]))
    assert "+15550101191" in sms_numbers(intake.process_submission(ctx, submit(ctx, "web:at-once")))


# ---- Case IDs ----

def test_case_ids_are_unique_when_many_workers_make_cases_at_once(db):
    keys = [f"web:{n}" for n in range(120)]
    found: dict[str, list[str]] = {key: [] for key in keys}

    def worker(offset: int) -> None:
        for key in keys[offset:] + keys[:offset]:     # every thread asks for every key
            found[key].append(db.case_id_for(key, "PS"))

    threads = [threading.Thread(target=worker, args=(n * 15,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(len(set(ids)) == 1 and len(ids) == 8 for ids in found.values())   # one ID per submission
    assert len({ids[0] for ids in found.values()}) == len(keys)                  # no two alike


def test_case_ids_go_on_past_nine_thousand_cases_and_old_ids_stay_valid(db):
    # Every ID the old random draw could give (PS-1000 to PS-9999) is taken.
    with db.engine.begin() as conn:
        conn.execute(database.case_refs.insert(),
                     [{"source_key": f"old:{n}", "case_id": f"PS-{n}"} for n in range(1000, 10000)])
    new = [db.case_id_for(f"web:new-{n}", "PS") for n in range(50)]
    assert new == [f"PS-{10001 + n}" for n in range(50)]
    assert db.case_id_for("old:4821", "PS") == "PS-4821"


def test_a_case_id_reads_as_a_short_number_that_an_sms_answer_finds(ctx, roster, run_worker):
    submit(ctx, "web:phone")
    run_worker()
    [case] = ctx.store.list_cases()
    assert re.fullmatch(r"PS-\d{5}", case.case_id) and case.ref == case.case_id[3:]
    assert sms_commands.parse_command(f"Yes {case.ref}") == ("yes", case.ref)
    assert offers.case_by_ref(ctx, case.ref).case_id == case.case_id
