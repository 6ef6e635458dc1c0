"""The async engine behind the store and the migrations: drivers, SQLite set-up, URL masking.

Two databases are supported: SQLite through aiosqlite (embedded, one orchestrator process)
and PostgreSQL through asyncpg. On SQLite every connection runs in WAL mode with a busy
timeout and foreign keys on, and the store, not the sqlite3 module, emits ``BEGIN``: write
transactions start with ``BEGIN IMMEDIATE`` so two writers queue for the write lock up front
instead of deadlocking when both try to upgrade a read lock; reads use a plain ``BEGIN``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from orchestrator.store import StoreUnavailable
from orchestrator.stores.errors import BadDatabaseUrl

__all__ = [
    "BEGIN_OPTION",
    "DEFAULT_POOL_SIZE",
    "POSTGRES_LOCK_TIMEOUT_MS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_engine",
    "mask_url",
    "parse_url",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite connection waits for another one's write lock before giving up."""

POSTGRES_LOCK_TIMEOUT_MS = 30_000
"""How long a PostgreSQL statement waits for a row lock (``lock_timeout``)."""

BEGIN_OPTION = "saga_sqlite_begin"
"""Execution option naming the SQLite ``BEGIN`` mode of a transaction (``IMMEDIATE`` if unset)."""

_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}

_EXPECTED = "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"


def parse_url(url: str | URL) -> URL:
    """The URL with its async driver filled in (``sqlite://`` becomes ``sqlite+aiosqlite://``).

    Raises :class:`BadDatabaseUrl` for anything else; the message never repeats a URL that
    could not be parsed, since it may hold a password.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise BadDatabaseUrl(f"the database URL is not valid: expected {_EXPECTED}") from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise BadDatabaseUrl(
            f"the database URL {mask_url(parsed)} uses the unsupported driver"
            f" {parsed.drivername!r}: expected {_EXPECTED}"
        )
    return parsed.set(drivername=driver)


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, fit for messages and logs."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<an unparsable database URL>"
    return parsed.render_as_string(hide_password=True)


DEFAULT_POOL_SIZE = 10
"""Connections a process keeps open by default (``SAGA_DB_POOL_SIZE``)."""


def create_engine(
    url: str | URL, *, pool_size: int | None = None, application_name: str = "saga-orchestrator"
) -> AsyncEngine:
    """An async engine for ``url``, set up as described in the module docstring.

    ``pool_size`` is how many connections the process keeps and the most it opens
    (:data:`DEFAULT_POOL_SIZE` when None): a transaction that finds them all busy waits for
    one. A fixed pool, because connections opened for a burst and closed after it cost the
    database a backend process each. ``application_name`` shows in PostgreSQL's
    ``pg_stat_activity``. Creating the engine opens no connection; for SQLite it checks
    that the file's folder exists (:class:`~orchestrator.store.StoreUnavailable` if not).

    PostgreSQL connections the server has closed are replaced at checkout without a round
    trip (see :func:`_postgres_checkout`).
    """
    parsed = parse_url(url)
    options: dict[str, Any] = {"pool_size": pool_size or DEFAULT_POOL_SIZE, "max_overflow": 0}
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_folder(parsed)
        if parsed.database in (None, "", ":memory:"):
            options = {}  # one connection, shared (SQLAlchemy's StaticPool): no pool to size
        engine = create_async_engine(parsed, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    settings = {
        "application_name": application_name,
        # Like SQLite's busy timeout: a lock held this long means something is stuck;
        # the waiter gives up with StoreUnavailable instead of hanging.
        "lock_timeout": f"{POSTGRES_LOCK_TIMEOUT_MS}ms",
    }
    engine = create_async_engine(parsed, connect_args={"server_settings": settings}, **options)
    event.listen(engine.sync_engine, "checkout", _postgres_checkout)
    return engine


def _postgres_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    # A connection the server closed (a restart, pg_terminate_backend) is known closed to
    # the driver as soon as the loop has read the end of its socket: skip it for a fresh
    # one. This costs no round trip, unlike SQLAlchemy's pre-ping (BEGIN, a query,
    # ROLLBACK on every checkout). A connection that died silently fails at its first
    # statement instead, as a disconnect, and the caller retries.
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this connection")


def _check_sqlite_folder(url: URL) -> None:
    # SQLite cannot create the folder, and a failed aiosqlite connect leaves its worker
    # thread to report to an event loop that may be gone by then: say it up front.
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    folder = Path(database).expanduser().parent
    if not folder.is_dir():
        raise StoreUnavailable(
            f"the database at {mask_url(url)} cannot be reached: the folder {folder} does not exist"
        )


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (it would defer it past SELECTs and DDL);
    # _sqlite_begin emits it instead. COMMIT and ROLLBACK still go through the driver.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _switch_to_wal(cursor)
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Switching a new file to WAL takes an exclusive lock that SQLite does not wait for
    # (the busy timeout does not apply): two processes opening one new file at the same
    # moment (a participant's replicas starting together) get "database is locked".
    # Wait as the busy timeout would.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # sqlite3.OperationalError, through aiosqlite's adapter
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # in the driver's own thread, not on the event loop


def _sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(BEGIN_OPTION, "IMMEDIATE")
    if mode not in _BEGIN_MODES:
        raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


async def autovacuum_warning(engine: AsyncEngine, tables: str, where: str) -> str | None:
    """A sentence for the log when PostgreSQL's autovacuum is off (None otherwise, and on
    SQLite). ``tables`` names the tables this process fills and prunes: their deleted rows
    are only ever reclaimed by a vacuum."""
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as connection:
        setting = await connection.scalar(text("SELECT current_setting('autovacuum')"))
    if setting != "off":
        return None
    return (
        f"PostgreSQL's autovacuum is off at {where}: {tables} take rows in and prune them,"
        " and without a vacuum their files and indexes grow without end and every query"
        " on them slows down; turn autovacuum on, or VACUUM them on a schedule"
    )
