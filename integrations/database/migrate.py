"""Bring a database's schema to the newest Alembic revision, once, before it is used.

Several processes (gunicorn workers, the huey worker, a CLI command) may start together on an
empty database. Each runs `migrate` inside one transaction that first takes a lock (PostgreSQL:
an advisory transaction lock; SQLite: the write lock our engines take at BEGIN IMMEDIATE), so one
migrates and the others then find the database at head and do nothing.

A database made before migrations existed (tables, no `alembic_version`) is adopted: brought to
the baseline revision (the tables and columns the old start-up would have added) and stamped.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import sqlalchemy as sa

# Alembic narrates every start at INFO (plugins set up, "Context impl SQLiteImpl." ...), some of
# it while being imported; a CLI command's output and the service's logs need none of it. Its
# warnings and errors still show.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from alembic.operations import Operations  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"

#: Any fixed number: the PostgreSQL advisory lock that lets one process at a time migrate.
_LOCK_KEY = 7_341_120


def migrate(engine: sa.Engine) -> None:
    """Upgrade `engine`'s database to head; a no-op (one query) when it is there already."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        current = MigrationContext.configure(conn).get_current_revision()
        if current == _script().get_current_head():
            return
        config = _config(conn)
        if current is None and sa.inspect(conn).has_table("inbox"):
            adopt(conn)
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")


def adopt(conn: sa.Connection) -> None:
    """Give a pre-migration database the baseline's missing tables and columns (they all have
    server defaults or allow NULL, so rows already there keep working)."""
    baseline = _script().get_revision(BASELINE).module.baseline(sa.MetaData())
    baseline.create_all(conn)   # checkfirst: only the missing tables
    inspector = sa.inspect(conn)
    ops = Operations(MigrationContext.configure(conn))
    for table in baseline.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ops.add_column(table.name, column._copy())


def _config(conn: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@functools.cache
def _script() -> ScriptDirectory:
    """Read the revision files once per process (tests make many fresh databases)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)
