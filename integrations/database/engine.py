"""One SQLAlchemy engine per database URL (and wait, and durability) per process, and the
schema brought up to date before the engine is handed out.

On SQLite (WAL) a commit waits for the disk (`synchronous=FULL`) only on the durable engine:
the inbox record behind a 2xx, and a message's claim before an outside provider is called
(reliability.md: FULL if a 2xx must mean "on disk"). Every other commit uses
`synchronous=NORMAL`: never corrupt, and an application crash loses nothing; only a power cut
or OS crash may lose the newest of those commits, which the durable inbox row and the sweep
redo. On PostgreSQL every commit is durable.

Every wait for the database is bounded (issue 15, "fail fast and loud"): `wait_seconds` caps
SQLite's busy wait, PostgreSQL's connect, statement and lock timeouts, and the pool's wait for a
free connection. The web process uses DATABASE_WAIT_SECONDS (5 s: a sender is answered 503 with
Retry-After well inside its own timeout); the worker may wait longer
(WORKER_DATABASE_WAIT_SECONDS). Migrating at start waits without a bound (another process may be
migrating)."""
from __future__ import annotations

import os
import sqlite3
import threading
import time

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from .migrate import migrate

#: The web process's wait for the database (DATABASE_WAIT_SECONDS' default).
WEB_WAIT_SECONDS = 5.0

_engines: dict[tuple[str, float, bool], sa.Engine] = {}
_engines_lock = threading.Lock()
_migrated: set[str] = set()


def engine_for(url: str, wait_seconds: float = WEB_WAIT_SECONDS, *, durable: bool = False) -> sa.Engine:
    """One engine per URL, wait and durability per process; the schema is migrated on first
    use. `durable`: on SQLite, every commit waits for the disk (PostgreSQL's always do)."""
    if not url.startswith("sqlite"):
        durable = False     # one engine: PostgreSQL's commits are durable
    key = (url, float(wait_seconds), durable)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            if url not in _migrated:
                migrating = _make_engine(url, None)
                try:
                    migrate(migrating)
                finally:
                    migrating.dispose()
                _migrated.add(url)
            engine = _make_engine(url, float(wait_seconds), durable)
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _migrated.clear()
        for engine in _ping_engines.values():
            engine.dispose()
        _ping_engines.clear()


def _journal_mode_wal(cursor, seconds: float) -> None:
    """PRAGMA journal_mode=WAL, tried again for up to `seconds`: two processes opening a new
    database at once (gunicorn's workers on a fresh DATA_DIR) both try to switch it, and SQLite
    answers the loser "database is locked" at once, without its busy wait (huey's
    SqliteStorage retries the same way)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _make_engine(url: str, wait: float | None, durable: bool = True) -> sa.Engine:
    """An engine whose every wait is bounded by `wait` seconds (None: SQLite's 30 s, no
    PostgreSQL timeouts; for migrating). `durable`: SQLite commits wait for the disk."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        busy = 30.0 if wait is None else wait
        # hide_parameters: a database error's message must not quote a request's answers.
        engine = sa.create_engine(url, connect_args={"timeout": busy}, hide_parameters=True,
                                  **({} if wait is None else {"pool_timeout": wait}))

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            _journal_mode_wal(cur, busy)
            cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            # Deleted and overwritten content is zeroed in the file, not left in free pages
            # (the purge: docs/architecture.md section 7, README "What we keep").
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            # Take the write lock at BEGIN, so read-then-write transactions cannot deadlock.
            # A read-only check (`readonly_ping`) opts out with the "peerline_readonly" option.
            if conn.get_execution_options().get("peerline_readonly"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        # Let SQLAlchemy's "begin" event issue BEGIN itself.
        @sa_event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        return engine
    if wait is None:
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)
    ms = int(wait * 1000)
    connect_args = {"connect_timeout": max(1, round(wait)),
                    "options": f"-c statement_timeout={ms} -c lock_timeout={ms}"}
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=wait,
                            connect_args=connect_args, hide_parameters=True)


#: How long `/readyz` waits for the database.
PING_SECONDS = 2.0
_ping_engines: dict[str, sa.Engine] = {}


def ping(url: str, seconds: float = PING_SECONDS) -> None:
    """Can this process reach the database? A read-only `SELECT` of the schema version on a fresh connection (no
    pool wait), bounded by `seconds`; on SQLite it takes no write lock (plain BEGIN, query_only),
    so a readiness probe never queues behind, or blocks, a writer. Raises on failure."""
    with _engines_lock:
        engine = _ping_engines.get(url)
        if engine is None:
            engine = _ping_engines[url] = _make_ping_engine(url, seconds)
    with engine.connect().execution_options(peerline_readonly=True) as conn:
        conn.execute(sa.text("SELECT 1 FROM alembic_version"))   # our schema, not any database


def _make_ping_engine(url: str, seconds: float) -> sa.Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":   # mode=rw: a missing file is an error, not a new empty database
            url = f"sqlite:///file:{os.path.abspath(path)}?mode=rw&uri=true"
        engine = sa.create_engine(url, connect_args={"timeout": seconds}, poolclass=sa.pool.NullPool,
                                  hide_parameters=True)

        @sa_event.listens_for(engine, "connect")
        def _readonly(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
            cur.execute("PRAGMA query_only=ON")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _begin_deferred(conn):
            conn.exec_driver_sql("BEGIN")

        return engine
    ms = int(seconds * 1000)
    return sa.create_engine(url, poolclass=sa.pool.NullPool, hide_parameters=True,
                            connect_args={"connect_timeout": max(1, round(seconds)),
                                          "options": f"-c statement_timeout={ms} -c default_transaction_read_only=on"})
