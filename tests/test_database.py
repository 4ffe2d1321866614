"""The service's own database schema: Alembic's revisions build exactly the tables the code
declares, a database from before migrations is adopted with its rows intact, and processes
starting together on a fresh database all boot (the PostgreSQL case is in test_durability.py)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from config import settings as settings_module
from config.settings import ROOT
from integrations import database
from integrations.database import migrate as migrate_module


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'peerline.db'}"
    else:
        yield settings_module.database_url({"DATABASE_URL": request.getfixturevalue("pg_url")})
    database.dispose_engines()


def head() -> str:
    return migrate_module._script().get_current_head()


def version(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_the_migrations_build_exactly_the_tables_the_code_declares(url):
    """A column or table added to schema.py without a revision would fail here, not in production."""
    engine = database.engine_for(url)
    assert version(engine) == head()
    ours = lambda name, type_, parents: type_ != "table" or name in database.metadata.tables  # noqa: E731
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": ours, "compare_type": True})
        assert compare_metadata(context, database.metadata) == []


def test_a_database_made_before_migrations_is_adopted_and_keeps_its_rows(url):
    """The old start-up made tables with create_all and no alembic_version; such a database is
    stamped, brought to head, and what it held is still there and still usable."""
    old = sa.create_engine(url)
    database.metadata.create_all(old)
    with old.begin() as conn:
        conn.execute(database.inbox.insert().values(
            source="webform", source_key="webform:1", received_at=sa.func.now(), payload="{}",
            status="done", attempts=1, last_error="", case_id="PS-1001"))
        conn.exec_driver_sql("ALTER TABLE messages DROP COLUMN mirror_due")   # an older database
    old.dispose()

    db = database.Database(url)
    assert version(db.engine) == head()
    assert [(r.source_key, r.case_id) for r in db.list_inbox()] == [("webform:1", "PS-1001")]
    assert db.record_submission(source="webform", source_key="webform:1", payload={}) == (1, False)
    columns = {c["name"] for c in sa.inspect(db.engine).get_columns("messages")}
    assert "mirror_due" in columns


def test_a_database_at_head_is_not_migrated_again(url, monkeypatch):
    database.engine_for(url)
    database.dispose_engines()
    monkeypatch.setattr(migrate_module.command, "upgrade", lambda *a, **k: pytest.fail("upgraded twice"))
    database.Database(url).ping()


@pytest.mark.slow
def test_processes_starting_together_on_a_fresh_sqlite_database_all_boot(tmp_path):
    """Web workers and the huey worker starting at once on an empty DATA_DIR: one migrates while
    the others wait on SQLite's write lock, then all serve."""
    script = "import sys; from integrations import database; database.Database(sys.argv[1]).ping(); print('ok')"
    url = f"sqlite:///{tmp_path / 'var' / 'peerline.db'}"
    starts = [subprocess.Popen([sys.executable, "-c", script, url], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=120) for p in starts]
    assert [p.returncode for p in starts] == [0] * 6, [err[-300:] for _, err in results if err]
    engine = sa.create_engine(url)
    assert version(engine) == head()
    engine.dispose()


def _open_new_database(path: str, barrier, answers) -> None:
    barrier.wait()
    try:
        from integrations.database.engine import _make_engine     # the connection's pragmas, no migration first
        with _make_engine(f"sqlite:///{path}", 5.0).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        answers.put("ok")
    except Exception as exc:  # the answer is what the test looks at
        answers.put(type(exc).__name__)


def test_processes_opening_a_new_database_at_once_all_start(tmp_path):
    """gunicorn's workers on a fresh DATA_DIR each switch the new file to WAL; the one SQLite
    refuses at once ("database is locked", no busy wait) tries again instead of failing to start.
    A race: thirty fresh databases, four processes each."""
    import multiprocessing
    fork = multiprocessing.get_context("fork")
    answers = fork.Queue()
    for n in range(30):
        barrier = fork.Barrier(4)
        workers = [fork.Process(target=_open_new_database, args=(str(tmp_path / f"p{n}.db"), barrier, answers))
                   for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(30)
    assert [answers.get(timeout=5) for _ in range(120)] == ["ok"] * 120
HOLD_THE_TURN = """
import sys, time
from integrations.database.transactions import write_turn
with write_turn(sys.argv[1]).held(5):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    released = time.monotonic()     # the system's monotonic clock, the same in every process
print(released, flush=True)
"""


def _another_process_writing(url: str, seconds: float) -> subprocess.Popen:
    """A process that holds the database's write turn for `seconds` (started, and holding it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_THE_TURN, url, str(seconds)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_write_waits_for_another_process_writing_and_then_goes_through(tmp_path):
    url = f"sqlite:///{tmp_path / 'peerline.db'}"
    db = database.Database(url, wait_seconds=10)
    other = _another_process_writing(url, 0.5)
    inbox_id, new = db.record_submission(source="web", source_key="web:1", payload={})
    written = time.monotonic()
    released = float(other.stdout.readline())
    other.wait(10)
    assert written > released                # it waited for the other process's turn to end
    assert new and db.inbox_row(inbox_id).source_key == "web:1"


def test_a_write_gives_up_within_its_wait_when_another_process_keeps_writing(tmp_path):
    """Every wait for the database is bounded: a web request answers 503 in time."""
    url = f"sqlite:///{tmp_path / 'peerline.db'}"
    db = database.Database(url, wait_seconds=0.3)
    other = _another_process_writing(url, 3)
    try:
        with pytest.raises(sa.exc.TimeoutError):
            db.record_submission(source="web", source_key="web:1", payload={})
        assert other.poll() is None              # gave up while the other still held it
    finally:
        other.wait(10)
    assert db.record_submission(source="web", source_key="web:1", payload={})[1]


def test_marks_lower_only_and_clear_only_the_value_they_were_read_at(url):
    """The clocks' hints (workflows/watch.py): the poll lowers one, a clock clears the one it served."""
    from datetime import datetime, timedelta, timezone
    db = database.Database(url)
    at = datetime(2026, 12, 2, 6, 0, tzinfo=timezone.utc)
    db.lower_mark("review_clock:hint", at)
    db.lower_mark("review_clock:hint", at + timedelta(hours=1))         # later: kept as it was
    assert db.mark("review_clock:hint") == at
    db.lower_mark("review_clock:hint", at - timedelta(hours=1))
    assert db.marks("review_clock:hint", "nothing") == {"review_clock:hint": at - timedelta(hours=1), "nothing": None}
    db.clear_mark_if("review_clock:hint", at)                           # lowered since: kept
    assert db.mark("review_clock:hint") == at - timedelta(hours=1)
    db.clear_mark_if("review_clock:hint", at - timedelta(hours=1))
    assert db.mark("review_clock:hint") is None
