"""The state store on SQLAlchemy (async Core): SQLite for one embedded orchestrator,
PostgreSQL for production.

``SqlStore`` implements :class:`orchestrator.store.Store`; its transactions are
:class:`~orchestrator.stores.unit_of_work.SqlUnitOfWork`. The read and maintenance
methods each run in a short transaction of their own. Every driver exception is
translated into a :class:`~orchestrator.store.StoreError` here; messages name the
database by its URL with the password masked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator import migrations
from orchestrator.core.state import SagaStatus
from orchestrator.store import (
    HistoryEntry,
    OutboxMessage,
    SagaRecord,
    SagaSummary,
    SchemaNotReady,
)
from orchestrator.stores import mapping
from orchestrator.stores.engine import BEGIN_OPTION, create_engine, mask_url
from orchestrator.stores.errors import translate
from orchestrator.stores.tables import history, instances, outbox, processed_messages
from orchestrator.stores.unit_of_work import DefinitionCache, SqlUnitOfWork

__all__ = ["SqlStore"]

_ID_CHUNK = 500
"""Ids per ``IN (...)`` list: far below every driver's bound-parameter limit."""


class SqlStore:
    """Saga state, history, outbox and inbox in a SQL database (see the module docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap an engine made by :func:`orchestrator.stores.engine.create_engine`
        (:meth:`connect` does both and checks the database answers)."""
        self._engine = engine
        self._where = mask_url(engine.url)
        self._sqlite = engine.dialect.name == "sqlite"
        self._definitions = DefinitionCache()

    @classmethod
    async def connect(cls, url: str, *, pool_size: int | None = None) -> SqlStore:
        """A store on the database at ``url`` (``sqlite+aiosqlite:///...`` or
        ``postgresql+asyncpg://...``; plain ``sqlite://``/``postgresql://`` get the async
        driver), with ``pool_size`` connections (see
        :func:`~orchestrator.stores.engine.create_engine`).
        :class:`~orchestrator.store.StoreUnavailable` if it does not answer."""
        store = cls(create_engine(url, pool_size=pool_size))
        try:
            async with store._connection(write=False) as connection:
                await connection.execute(sa.text("SELECT 1"))
        except BaseException:
            await store.close()
            raise
        return store

    @property
    def url(self) -> str:
        """The database URL with the password masked."""
        return self._where

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def engine(self) -> AsyncEngine:
        """The engine underneath (for tests and instrumentation)."""
        return self._engine

    @asynccontextmanager
    async def _connection(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends normally, else rolled back.

        On SQLite a write transaction takes the write lock at ``BEGIN IMMEDIATE``; a read
        uses a deferred ``BEGIN`` and never blocks a writer (WAL).
        """
        try:
            connection = await self._engine.connect()
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, self._where) from exc
        try:
            try:
                if self._sqlite and not write:
                    await connection.execution_options(**{BEGIN_OPTION: "DEFERRED"})
                await connection.begin()
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                raise translate(exc, self._where) from exc
            try:
                yield connection
            except BaseException:
                # The original error matters more than a failed rollback on a broken
                # connection (closing it discards the transaction anyway).
                with suppress(sa_exc.SQLAlchemyError, OSError):
                    await connection.rollback()
                raise
            try:
                await connection.commit()
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                raise translate(exc, self._where) from exc
        finally:
            with suppress(sa_exc.SQLAlchemyError, OSError):
                await connection.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlUnitOfWork]:
        """One write transaction (see :class:`~orchestrator.store.UnitOfWork`): it commits
        when the block ends normally and rolls back when the block raises.

        A :class:`~orchestrator.store.StoreUnavailable` from the commit itself leaves the
        outcome unknown (the commit may have happened); the inbox makes a retry safe.
        """
        async with self._connection(write=True) as connection:
            unit = SqlUnitOfWork(connection, where=self._where, definitions=self._definitions)
            try:
                yield unit
            finally:
                unit.close()

    async def get(self, saga_id: str) -> SagaRecord | None:
        """One saga, without locking."""
        async with self._connection(write=False) as connection:
            unit = SqlUnitOfWork(connection, where=self._where, definitions=self._definitions)
            return await unit.load(saga_id, lock=False)

    async def list_sagas(
        self, *, state: SagaStatus | None = None, name: str | None = None, limit: int = 100
    ) -> list[SagaSummary]:
        """Sagas newest first (ties by id, descending); ``limit`` 0 for all."""
        statement = sa.select(
            instances.c.id,
            instances.c.name,
            instances.c.version,
            instances.c.state,
            instances.c.created_at,
            instances.c.updated_at,
        ).order_by(instances.c.created_at.desc(), instances.c.id.desc())
        if state is not None:
            statement = statement.where(instances.c.state == state)
        if name is not None:
            statement = statement.where(instances.c.name == name)
        if limit > 0:
            statement = statement.limit(limit)
        rows = await self._read(statement)
        return [mapping.saga_summary(row) for row in rows]

    async def history(self, saga_id: str) -> list[HistoryEntry]:
        """The saga's history, oldest first (empty for an unknown saga)."""
        statement = sa.select(history).where(history.c.saga_id == saga_id).order_by(history.c.seq)
        return [mapping.history_entry(row) for row in await self._read(statement)]

    async def unsent(
        self, limit: int, *, older_than: datetime | None = None
    ) -> list[OutboxMessage]:
        """Outbox rows not yet confirmed by the broker, oldest first; ``limit`` 0 for all.

        ``older_than`` keeps only rows created at or before that time (the relay's sweep
        for rows whose first publish it never confirmed).
        """
        statement = sa.select(outbox).where(outbox.c.sent_at.is_(None)).order_by(outbox.c.id)
        if older_than is not None:
            statement = statement.where(outbox.c.created_at <= older_than)
        if limit > 0:
            statement = statement.limit(limit)
        return [mapping.outbox_message(row) for row in await self._read(statement)]

    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        """Mark outbox rows as confirmed by the broker (rows already marked keep their time)."""
        if not ids:
            return
        async with self._connection(write=True) as connection:
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = list(ids[start : start + _ID_CHUNK])
                statement = (
                    sa.update(outbox)
                    .where(outbox.c.id.in_(chunk), outbox.c.sent_at.is_(None))
                    .values(sent_at=now)
                )
                await self._run(connection, statement)

    async def prune(self, *, processed_before: datetime, sent_before: datetime) -> int:
        """Delete processed-message ids older than ``processed_before`` and outbox rows sent
        before ``sent_before``; unsent rows are never deleted. Returns the rows deleted."""
        async with self._connection(write=True) as connection:
            processed = await self._run(
                connection,
                sa.delete(processed_messages).where(
                    processed_messages.c.processed_at < processed_before
                ),
            )
            sent = await self._run(
                connection,
                sa.delete(outbox).where(
                    outbox.c.sent_at.is_not(None), outbox.c.sent_at < sent_before
                ),
            )
        return processed + sent

    async def check_schema(self) -> None:
        """:class:`~orchestrator.store.SchemaNotReady` unless the database is at the newest
        migration."""
        head = await asyncio.to_thread(migrations.head)
        async with self._connection(write=False) as connection:
            try:
                heads = await connection.run_sync(migrations.current_heads)
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                raise translate(exc, self._where) from exc
        if heads == (head,):
            return
        if not heads:
            raise SchemaNotReady(
                f"the database at {self._where} is not migrated: run `saga db upgrade`"
            )
        raise SchemaNotReady(
            f"the database at {self._where} is at revision {', '.join(heads)}, not {head}:"
            " run `saga db upgrade` (or upgrade the orchestrator if the database is newer)"
        )

    async def close(self) -> None:
        """Release the connection pool."""
        with suppress(sa_exc.SQLAlchemyError, OSError):
            await self._engine.dispose()

    async def _read(self, statement: sa.Select[tuple[object, ...]]) -> list[sa.RowMapping]:
        async with self._connection(write=False) as connection:
            try:
                result = await connection.execute(statement)
                return list(result.mappings())
            except (sa_exc.SQLAlchemyError, OSError) as exc:
                raise translate(exc, self._where) from exc

    async def _run(self, connection: AsyncConnection, statement: sa.Executable) -> int:
        try:
            return (await connection.execute(statement)).rowcount
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, self._where) from exc
