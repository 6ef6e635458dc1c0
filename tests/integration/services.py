"""Finding the services the integration tests need (PostgreSQL here; RabbitMQ can follow).

For each service: the ``SAGA_TEST_*`` variable when it is set (and nothing else, so a
misconfigured CI run fails instead of testing something else), else the local default
when it answers, else a testcontainers container. A test whose service none of these
provides fails with a message naming the service and the variable to set; it never skips.
"""

from __future__ import annotations

import asyncio
import secrets
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

__all__ = [
    "DEFAULT_POSTGRES_ADMIN_URL",
    "PostgresServer",
    "PostgresService",
    "ServiceUnavailable",
]

DEFAULT_POSTGRES_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
"""The local PostgreSQL tried when ``SAGA_TEST_DATABASE_URL`` is not set."""

_PROBE_TIMEOUT_S = 5.0
_CONTAINER_IMAGE = "postgres:15-alpine"


class ServiceUnavailable(Exception):
    """A service the tests need cannot be reached; the message says which and how to fix it."""


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    admin_url: str
    """SQLAlchemy URL (``postgresql+asyncpg://``) of a database to connect to as a superuser."""

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        url = make_url(self.admin_url).set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False)

    @asynccontextmanager
    async def fresh_database(self) -> AsyncIterator[str]:
        """A new, empty database for one test (its URL), dropped afterwards."""
        name = f"saga_test_{secrets.token_hex(6)}"
        await self.admin(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            # FORCE: a test that failed may have left connections open.
            await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def admin(self, sql: str, params: Mapping[str, Any] | None = None) -> list[sa.Row[Any]]:
        """Run one statement in the admin database, outside a transaction (as CREATE
        DATABASE needs); its rows, if it returns any."""
        engine = create_async_engine(
            self.url(make_url(self.admin_url).database or "postgres"),
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args={"timeout": _PROBE_TIMEOUT_S},
        )
        try:
            async with engine.connect() as connection:
                result = await connection.execute(sa.text(sql), params or {})
                return list(result) if result.returns_rows else []
        finally:
            await engine.dispose()


class PostgresService:
    """Finds a PostgreSQL server once per test session (see the module docstring)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._configured = environ.get("SAGA_TEST_DATABASE_URL")
        self._server: PostgresServer | None = None
        self._failure: str | None = None
        self._container: Any = None

    async def server(self) -> PostgresServer:
        """The server; :class:`ServiceUnavailable` (the same message every time) if none."""
        # Tests run one at a time, and each has its own event loop: no lock, no loop state.
        if self._server is None and self._failure is None:
            try:
                self._server = await self._find()
            except ServiceUnavailable as exc:
                self._failure = str(exc)
        if self._server is None:
            raise ServiceUnavailable(self._failure)
        return self._server

    def close(self) -> None:
        """Stop the container, if one was started."""
        if self._container is not None:
            self._container.stop()
            self._container = None

    async def _find(self) -> PostgresServer:
        if self._configured:
            server = PostgresServer(self._configured)
            cause = await _probe(server)
            if cause is not None:
                raise ServiceUnavailable(_message(self._configured, cause))
            return server
        local = PostgresServer(DEFAULT_POSTGRES_ADMIN_URL)
        local_cause = await _probe(local)
        if local_cause is None:
            return local
        try:
            return await asyncio.to_thread(self._start_container)
        except Exception as exc:  # Docker missing, image pull refused, ...: all say the same
            raise ServiceUnavailable(
                _message(DEFAULT_POSTGRES_ADMIN_URL, local_cause)
                + f" (and no testcontainers PostgreSQL either: {type(exc).__name__}: {exc})"
            ) from None

    def _start_container(self) -> PostgresServer:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                from testcontainers.community.postgres import PostgresContainer
            except ImportError:
                from testcontainers.postgres import PostgresContainer
        container = PostgresContainer(_CONTAINER_IMAGE, driver="asyncpg")
        container.start()
        self._container = container
        return PostgresServer(str(container.get_connection_url()))


async def _probe(server: PostgresServer) -> str | None:
    """None if the server answers as a user who may create databases, else why not."""
    try:
        rows = await server.admin(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
    if not rows or not rows[0][0]:
        return "the user may not create databases (the tests make their own)"
    return None


def _message(url: str, cause: str) -> str:
    masked = make_url(url).render_as_string(hide_password=True)
    return f"PostgreSQL is not reachable at {masked}: {cause}; set SAGA_TEST_DATABASE_URL"
