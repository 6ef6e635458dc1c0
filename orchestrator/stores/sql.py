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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.core.state import SagaState, SagaStatus
from orchestrator.store import (
    HistoryEntry,
    NewSaga,
    OutboxMessage,
    SagaRecord,
    SagaSummary,
    SchemaNotReady,
    Snapshot,
    StaleVersion,
    Transition,
)
from orchestrator.stores import mapping, postgres
from orchestrator.stores.engine import (
    BEGIN_OPTION,
    autovacuum_warning,
    create_engine,
    mask_url,
)
from orchestrator.stores.errors import is_unique_violation, translate
from orchestrator.stores.recent import RecentSagas
from orchestrator.stores.tables import history, instances, outbox, processed_messages
from orchestrator.stores.unit_of_work import DefinitionCache, SqlUnitOfWork

__all__ = ["SqlStore"]

_T = TypeVar("_T")
_SNAPSHOT = postgres.snapshot_statement()

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
        self._recent = RecentSagas()

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
    async def _autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose every statement commits on its own (no BEGIN, no COMMIT):
        for the single-statement paths on PostgreSQL."""
        try:
            connection = await self._engine.connect()
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, self._where) from exc
        try:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection
        finally:
            with suppress(sa_exc.SQLAlchemyError, OSError):
                await connection.close()

    async def _guarded(self, work: Awaitable[_T]) -> _T:
        """Await a single-statement write; a duplicate key (a history seq, an inbox row
        written meanwhile) means someone else moved first: :class:`StaleVersion`."""
        try:
            return await work
        except sa_exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise StaleVersion(f"a concurrent write got there first ({exc.orig})") from exc
            raise translate(exc, self._where) from exc
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, self._where) from exc

    async def _rows(
        self, connection: AsyncConnection, statement: sa.Executable, params: dict[str, Any]
    ) -> list[sa.RowMapping]:
        try:
            return list((await connection.execute(statement, params)).mappings())
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, self._where) from exc

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
                for saga_id in unit.touched():  # moved here: what this process remembers is old
                    self._recent.forget(saga_id)

    async def snapshot(
        self,
        saga_id: str,
        *,
        inbox: tuple[str, str],
        expects: Callable[[SagaState], bool] | None = None,
    ) -> Snapshot:
        """The saga and whether ``inbox`` (consumer, message id) was handled, in one read;
        from memory when this process wrote the saga last (see
        :class:`~orchestrator.stores.recent.RecentSagas`) and it meets ``expects``."""
        remembered = self._recent.get(saga_id)
        if remembered is not None:
            assert remembered.record is not None
            if expects is None or expects(remembered.record.state):
                return remembered
            self._recent.forget(saga_id)
        consumer, message_id = inbox
        if not self._sqlite:
            params = {"saga_id": saga_id, "consumer": consumer, "message_id": message_id}
            async with self._autocommit() as connection:
                rows = await self._rows(connection, _SNAPSHOT, params)
            if not rows:
                return postgres.snapshot_from_rows(rows, None)
            record = self._definitions.record(saga_id, rows[0], postgres.step_rows(rows))
            return postgres.snapshot_from_rows(rows, record)
        async with self._connection(write=False) as connection:
            unit = SqlUnitOfWork(connection, where=self._where, definitions=self._definitions)
            loaded = await unit.load(saga_id, lock=False)
            processed = await unit.is_processed(consumer, message_id)
            return Snapshot(loaded, unit.last_seq(saga_id) or 0, processed)

    async def apply(self, transition: Transition) -> list[int] | None:
        """Write a transition (see :class:`~orchestrator.store.Transition`); on PostgreSQL in
        one statement (:mod:`orchestrator.stores.postgres`), else in a transaction."""
        saga_id = transition.after.saga_id
        try:
            if self._sqlite or not postgres.can_apply(transition):
                async with self.transaction() as unit:
                    ids = await unit.apply(transition)
                handled = ids is None
            else:
                async with self._autocommit() as connection:
                    ids = await self._guarded(postgres.apply(connection, transition))
                handled = False
        except BaseException:
            self._recent.forget(saga_id)  # it may even have committed: read it again
            raise
        if ids is None:
            self._recent.forget(saga_id)
            if handled:
                return None
            raise StaleVersion(
                f"saga {saga_id} moved past version {transition.before.version},"
                " or its message was handled meanwhile"
            )
        self._recent.applied(transition)
        return ids

    async def create(self, saga: NewSaga) -> list[int] | None:
        """Create a keyed saga in one statement (PostgreSQL); None when its id or key is
        taken, its message was handled, or the database is SQLite."""
        if self._sqlite:
            return None
        async with self._autocommit() as connection:
            try:
                ids = await self._guarded(postgres.create(connection, saga))
            except StaleVersion:
                return None  # the inbox row raced in: the general path says it was handled
        if ids is not None:
            self._recent.created(saga)
        return ids

    async def get(self, saga_id: str) -> SagaRecord | None:
        """One saga, without locking."""
        async with self._connection(write=False) as connection:
            unit = SqlUnitOfWork(connection, where=self._where, definitions=self._definitions)
            return await unit.load(saga_id, lock=False)

    async def list_sagas(
        self,
        *,
        state: SagaStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        version: int | None = None,
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
        if version is not None:
            statement = statement.where(instances.c.version == version)
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
        # Each chunk stands alone: on PostgreSQL one statement each, without BEGIN/COMMIT.
        opened = self._connection(write=True) if self._sqlite else self._autocommit()
        async with opened as connection:
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = list(ids[start : start + _ID_CHUNK])
                statement = (
                    sa.update(outbox)
                    .where(outbox.c.id.in_(chunk), outbox.c.sent_at.is_(None))
                    .values(sent_at=now)
                )
                await self._run(connection, statement)

    async def prune(
        self, *, processed_before: datetime, sent_before: datetime, limit: int = 0
    ) -> int:
        """Delete processed-message ids older than ``processed_before`` and outbox rows sent
        before ``sent_before``; unsent rows are never deleted. At most ``limit`` rows of each
        (0: all), so that a large backlog goes in short transactions. Returns the rows
        deleted."""
        old_ids = sa.select(processed_messages.c.consumer, processed_messages.c.message_id).where(
            processed_messages.c.processed_at < processed_before
        )
        old_rows = sa.select(outbox.c.id).where(
            outbox.c.sent_at.is_not(None), outbox.c.sent_at < sent_before
        )
        if limit > 0:
            old_ids, old_rows = old_ids.limit(limit), old_rows.limit(limit)
        key = sa.tuple_(processed_messages.c.consumer, processed_messages.c.message_id)
        async with self._connection(write=True) as connection:
            processed = await self._run(
                connection, sa.delete(processed_messages).where(key.in_(old_ids))
            )
            sent = await self._run(connection, sa.delete(outbox).where(outbox.c.id.in_(old_rows)))
        return processed + sent

    async def check_schema(self) -> None:
        """:class:`~orchestrator.store.SchemaNotReady` unless the database is at the newest
        migration."""
        # Alembic is imported here, not at the top: importing it costs a process about half
        # a second at start, and only this check and `saga db` need it.
        from orchestrator import migrations

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

    async def maintenance_warnings(self) -> list[str]:
        """What the database's settings will cost over time (autovacuum off), for the log."""
        try:
            warning = await autovacuum_warning(
                self._engine, "the outbox and processed_messages tables", self._where
            )
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, self._where) from exc
        return [] if warning is None else [warning]

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
