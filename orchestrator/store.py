"""The state store port: what the runtime needs from durable storage.

The SQLAlchemy implementation is :mod:`orchestrator.stores.sql`. Every write that
moves a saga happens inside one :class:`UnitOfWork` (one database transaction):
the processed message id (dedupe), the new saga state, its history records and
the messages to publish (outbox) commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from orchestrator.core.effects import Record
from orchestrator.core.state import JSON, DeadlinePurpose, Kind, SagaState, SagaStatus
from orchestrator.errors import SagaError


@dataclass(frozen=True)
class SagaRecord:
    """A saga as stored: its state plus what only the store keeps."""

    state: SagaState
    version: int
    """Optimistic concurrency: bumped by every update."""
    idempotency_key: str | None
    trace_context: dict[str, str] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class SagaSummary:
    """One row of ``saga list``."""

    id: str
    name: str
    version: int
    state: SagaStatus
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class HistoryEntry:
    """One stored history event (``saga history``)."""

    seq: int
    at: datetime
    type: str
    step: str | None
    attempt: int | None
    detail: dict[str, JSON]


@dataclass(frozen=True)
class OutboxMessage:
    """A message to publish, written in the transaction that decided to send it."""

    message_id: str
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, JSON] = field(default_factory=dict)
    content_type: str = "application/json"
    correlation_id: str | None = None
    reply_to: str | None = None
    type: str | None = None
    saga_id: str | None = None
    id: int | None = None
    """The outbox row id, set once stored."""
    created_at: datetime | None = None
    """When the row was committed (for the outbox lag metric), set once stored."""


@dataclass(frozen=True)
class DueTimer:
    """A step deadline that has passed, as claimed by the timer loop."""

    saga_id: str
    step: str
    kind: Kind
    attempt: int
    purpose: DeadlinePurpose
    at: datetime


class StoreError(SagaError):
    """Root of the store's errors; driver exceptions are translated into these."""


class StaleVersion(StoreError):
    """Another transaction updated the saga first (optimistic concurrency)."""


class DuplicateSaga(StoreError):
    """A saga with this id, or this (name, idempotency key), already exists."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or dropped the connection; try again later."""


class SchemaNotReady(StoreError):
    """The database is not at the schema version this code needs (``saga db upgrade``)."""


class UnitOfWork(Protocol):
    """One transaction; commits when the ``async with`` block ends normally."""

    async def mark_processed(self, consumer: str, message_id: str, now: datetime) -> bool:
        """Record that ``consumer`` handled ``message_id``; False if it already had."""
        ...

    async def find_by_key(self, name: str, idempotency_key: str) -> str | None:
        """The id of the saga started under this (name, key), if any."""
        ...

    async def load(self, saga_id: str, *, lock: bool = True) -> SagaRecord | None:
        """The saga, locked for this transaction where the database can (``FOR UPDATE``)."""
        ...

    async def insert(
        self,
        state: SagaState,
        *,
        idempotency_key: str | None,
        trace_context: dict[str, str] | None,
        now: datetime,
    ) -> None:
        """Store a new saga (version 1); :class:`DuplicateSaga` if id or key is taken."""
        ...

    async def update(self, state: SagaState, *, expected_version: int, now: datetime) -> int:
        """Write the new state; :class:`StaleVersion` unless the stored version matches."""
        ...

    async def append_history(self, saga_id: str, records: Sequence[Record], now: datetime) -> None:
        """Append history events, numbered after the saga's last one."""
        ...

    async def enqueue(self, messages: Sequence[OutboxMessage], now: datetime) -> list[int]:
        """Add messages to the outbox; returns their row ids in order."""
        ...

    async def claim_due(self, now: datetime, limit: int) -> list[DueTimer]:
        """Deadlines at or before ``now``, locked so no other orchestrator claims them
        (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)."""
        ...


class Store(Protocol):
    """Durable saga state, history, outbox and dedupe records."""

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Open one transaction (see :class:`UnitOfWork`)."""
        ...

    async def get(self, saga_id: str) -> SagaRecord | None:
        """One saga, without locking."""
        ...

    async def list_sagas(
        self, *, state: SagaStatus | None = None, name: str | None = None, limit: int = 100
    ) -> list[SagaSummary]:
        """Sagas newest first; ``limit`` 0 for all."""
        ...

    async def history(self, saga_id: str) -> list[HistoryEntry]:
        """The saga's history, oldest first."""
        ...

    async def unsent(
        self, limit: int, *, older_than: datetime | None = None
    ) -> list[OutboxMessage]:
        """Outbox rows not yet confirmed by the broker, oldest first."""
        ...

    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        """Mark outbox rows as confirmed by the broker."""
        ...

    async def prune(self, *, processed_before: datetime, sent_before: datetime) -> int:
        """Delete old processed-message ids and sent outbox rows; returns rows deleted."""
        ...

    async def check_schema(self) -> None:
        """:class:`SchemaNotReady` unless the database is at the newest migration."""
        ...

    async def close(self) -> None:
        """Release the connection pool."""
        ...
