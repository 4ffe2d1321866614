"""Alembic's environment for the service's own database.

At start-up `integrations.database.migrate` runs this with its own connection (already in a
transaction that holds the migration lock). From the command line (see alembic.ini beside this
file) it connects to the configured database itself, e.g. to autogenerate a new revision.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from integrations.database.schema import UTCDateTime, metadata


def include_name(name, type_, parent_names) -> bool:
    """Only our tables: the rate limit's and Airtable throttle's tables and huey's queue may
    share the database, and are not ours to migrate."""
    return type_ != "table" or name in metadata.tables


def render_item(type_, obj, autogen_context):
    """Revisions are frozen: write our UTC type as the plain column type it creates."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      include_name=include_name, render_item=render_item, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    from config import settings
    url = context.config.get_main_option("sqlalchemy.url") or settings.database_url(settings.load())
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
