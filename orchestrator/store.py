"""The state store port: what the runtime needs from durable storage.

The SQLAlchemy implementation is :mod:`orchestrator.stores.sql`. Every write that
moves a saga happens inside one :class:`UnitOfWork` (one database transaction):
the processed message id (dedupe), the new saga state, its history records and
the messages to publish (outbox) commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
class Snapshot:
    """A saga as read for one incoming message, before deciding (no lock is held)."""

    record: SagaRecord | None
    """None when no saga has the id."""
    last_seq: int
    """The saga's last history seq, in the same snapshot as the record."""
    processed: bool
    """The message was already handled (its effects are in the record). False may also
    mean "not known" when the store answered from memory: :meth:`Store.apply` then refuses
    a handled message with :class:`StaleVersion`, and the next snapshot reads it."""


@dataclass(frozen=True)
class Transition:
    """Everything one handled message changes, written at once or not at all.

    The write succeeds only if the saga is still at ``before.version`` and the message
    was not handled meanwhile; otherwise :class:`StaleVersion` (read and decide again).
    """

    before: SagaRecord
    after: SagaState
    history: Sequence[Record]
    outbox: Sequence[OutboxMessage]
    now: datetime
    last_seq: int | None = None
    """The saga's last history seq at ``before``; None when the store must look it up."""
    inbox: tuple[str, str] | None = None
    """(consumer, message id) to record as handled, when a message caused this."""


@dataclass(frozen=True)
class NewSaga:
    """A saga to create with its first history events and commands (see :meth:`Store.create`)."""

    state: SagaState
    idempotency_key: str
    trace_context: dict[str, str] | None
    history: Sequence[Record]
    outbox: Sequence[OutboxMessage]
    inbox: tuple[str, str]
    now: datetime


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

    async def apply(self, transition: Transition) -> list[int] | None:
        """Write a transition in this transaction (see :meth:`Store.apply`)."""
        ...

    async def claim_due(self, now: datetime, limit: int) -> list[DueTimer]:
        """Deadlines at or before ``now``, locked so no other orchestrator claims them
        (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)."""
        ...

    async def claim_due_sagas(self, now: datetime, limit: int) -> list[str]:
        """Ids of running sagas whose own deadline is at or before ``now``, oldest first,
        locked like :meth:`claim_due`."""
        ...


class Store(Protocol):
    """Durable saga state, history, outbox and dedupe records."""

    async def snapshot(
        self,
        saga_id: str,
        *,
        inbox: tuple[str, str],
        expects: Callable[[SagaState], bool] | None = None,
    ) -> Snapshot:
        """The saga and whether ``inbox`` (consumer, message id) was handled, in one read.

        A store may answer from what it remembers of a saga it wrote last; ``expects`` says
        what the caller's message needs of the saga, and a remembered saga that does not
        meet it is read again (another process has most likely moved it)."""
        ...

    async def apply(self, transition: Transition) -> list[int] | None:
        """Write a transition; the outbox row ids in order, or None if its message was
        handled already. :class:`StaleVersion` if the saga moved since it was read."""
        ...

    async def create(self, saga: NewSaga) -> list[int] | None:
        """Create a keyed saga in one step when nothing stands in the way: the outbox row
        ids in order, or None (the id or key is taken, or the message was handled, or the
        store has no single-step path): then :meth:`transaction` decides what holds."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Open one transaction (see :class:`UnitOfWork`)."""
        ...

    async def get(self, saga_id: str) -> SagaRecord | None:
        """One saga, without locking."""
        ...

    async def list_sagas(
        self,
        *,
        state: SagaStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        version: int | None = None,
    ) -> list[SagaSummary]:
        """Sagas newest first (of one definition version, if given); ``limit`` 0 for all."""
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

    async def prune(
        self, *, processed_before: datetime, sent_before: datetime, limit: int = 0
    ) -> int:
        """Delete old processed-message ids and sent outbox rows (at most ``limit`` of each,
        0 for all); returns rows deleted."""
        ...

    async def check_schema(self) -> None:
        """:class:`SchemaNotReady` unless the database is at the newest migration."""
        ...

    async def maintenance_warnings(self) -> list[str]:
        """What the database's settings will cost over time (autovacuum off), for the log."""
        ...

    async def close(self) -> None:
        """Release the connection pool."""
        ...
