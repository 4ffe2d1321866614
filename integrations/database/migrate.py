"""Create missing tables and columns at first use (the pre-Alembic start-up, moved as is)."""
from __future__ import annotations

import sqlalchemy as sa

from .schema import metadata

#: Any fixed number: the PostgreSQL advisory lock that lets one process at a time set up tables.
_SCHEMA_LOCK_KEY = 7_341_120


def migrate(engine: sa.Engine) -> None:
    """Create missing tables and columns. Several processes starting at once on a fresh
    PostgreSQL database (two gunicorn workers and the worker) would race on CREATE TABLE and
    one would fail to boot, so they take turns under an advisory lock. (SQLite's BEGIN
    IMMEDIATE serialises them already.)"""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_lock(_SCHEMA_LOCK_KEY)))
            try:
                metadata.create_all(engine)
                _add_missing_columns(engine)
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(_SCHEMA_LOCK_KEY)))
                conn.commit()
        return
    metadata.create_all(engine)
    _add_missing_columns(engine)


def _add_missing_columns(engine: sa.Engine) -> None:
    """Columns added to a table after a database was created (create_all makes only new
    tables). New columns are nullable or have a server default, so this is safe to run."""
    inspector = sa.inspect(engine)
    existing_tables = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = sa.schema.CreateColumn(column).compile(dialect=engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            except sa.exc.DBAPIError:
                pass  # another process added it first
