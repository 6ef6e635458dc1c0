"""Alembic's environment: runs the migrations in ``versions/`` on SQLite or PostgreSQL.

The database URL is the configuration's ``sqlalchemy.url`` (set by
:mod:`orchestrator.migrations`, or read from ``alembic.ini`` on the command line), unless
``-x url=...`` overrides it. The engine is the store's own (:func:`create_engine`), so
SQLite gets the same pragmas and a real transaction around the whole upgrade. A caller
may also pass a sync connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from sqlalchemy.engine import Connection

from alembic import context
from orchestrator.stores.engine import create_engine
from orchestrator.stores.tables import metadata

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database URL: set sqlalchemy.url or pass -x url=URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: Alembic recreates the table instead ("batch").
        render_as_batch=connection.dialect.name == "sqlite",
        # The store's engine emits BEGIN itself on SQLite, so DDL there is transactional
        # too: a failed upgrade leaves nothing half done.
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_offline() -> None:
    """Write the SQL to stdout (``alembic upgrade --sql``) instead of running it."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations against the database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_offline()
else:
    run_online()
