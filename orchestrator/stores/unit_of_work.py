"""One store transaction (:class:`~orchestrator.store.UnitOfWork`) on SQLAlchemy Core.

This is the orchestrator's hot path: every reply is ``mark_processed`` + ``load`` +
``update`` + ``append_history`` + ``enqueue`` in one transaction, so each call costs one
statement (``load`` two), and ``update`` writes only the step rows that differ from what
this unit of work loaded.

History numbering: ``load`` reads the saga's last history ``seq`` in the same statement
as the step rows (a scalar subquery on the ``(saga_id, seq)`` key), so
``append_history`` numbers new events without a query of its own. The saga row is locked
(``FOR UPDATE`` on PostgreSQL, the write lock of ``BEGIN IMMEDIATE`` on SQLite), so no
one else can append meanwhile; the ``(saga_id, seq)`` primary key backs that up and turns
a race into :class:`~orchestrator.store.StaleVersion`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.core.effects import Record
from orchestrator.core.state import SagaState
from orchestrator.definitions.model import SagaDefinition
from orchestrator.store import (
    DueTimer,
    DuplicateSaga,
    OutboxMessage,
    SagaRecord,
    StaleVersion,
    StoreError,
    Transition,
)
from orchestrator.stores import mapping
from orchestrator.stores.errors import InvalidValue, is_unique_violation, translate
from orchestrator.stores.tables import (
    ID_LENGTH,
    KEY_LENGTH,
    history,
    instances,
    outbox,
    processed_messages,
    steps,
)

__all__ = ["DefinitionCache", "SqlUnitOfWork", "check_length"]

# Columns written when a step changes; the key columns are bound under other names.
_STEP_VALUES = tuple(c.name for c in steps.columns if c.name not in ("saga_id", "step_index"))
_UPDATE_STEP = (
    sa.update(steps)
    .where(
        steps.c.saga_id == sa.bindparam("key_saga_id"),
        steps.c.step_index == sa.bindparam("key_step_index"),
    )
    .values({name: sa.bindparam(name, type_=steps.c[name].type) for name in _STEP_VALUES})
)


def _steps_and_last_seq(saga_id: str) -> sa.Select[Any]:
    # The last history seq rides along with the step rows. Not with the instance row: on
    # PostgreSQL, a SELECT ... FOR UPDATE that waited for the lock returns the newest
    # version of the locked row, but its subqueries still see the snapshot taken before
    # the wait. This statement starts after the lock is held, so it sees the last commit.
    last_seq = (
        sa.select(history.c.seq)
        .where(history.c.saga_id == saga_id)
        .order_by(history.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    return (
        sa.select(steps, last_seq.label("last_seq"))
        .where(steps.c.saga_id == saga_id)
        .order_by(steps.c.step_index)
    )


def _same(before: object, after: object) -> bool:
    return before is after or before == after


def check_length(what: str, value: str, limit: int) -> None:
    """:class:`InvalidValue` when ``value`` is longer than the column holding it allows."""
    if len(value) > limit:
        raise InvalidValue(f"{what} is {len(value)} characters long; the limit is {limit}")


class DefinitionCache:
    """Validated definition snapshots by (name, version), so loading a saga does not
    validate the same JSON again; an entry is used only if its JSON equals the stored one."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], tuple[Any, SagaDefinition]] = OrderedDict()

    def get(self, snapshot: Mapping[str, Any]) -> SagaDefinition:
        """The definition for a stored snapshot (pydantic's ValidationError if invalid)."""
        key = (str(snapshot.get("name")), str(snapshot.get("version")))
        entry = self._entries.get(key)
        if entry is not None and entry[0] == snapshot:
            self._entries.move_to_end(key)
            return entry[1]
        definition = SagaDefinition.model_validate(snapshot)
        self._entries[key] = (snapshot, definition)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return definition

    def record(
        self, saga_id: str, instance: mapping.Row, step_rows: Sequence[mapping.Row]
    ) -> SagaRecord:
        """The saga stored in these rows; :class:`StoreError` if its definition is invalid."""
        try:
            definition = self.get(instance["definition"])
        except ValidationError as exc:
            raise StoreError(
                f"the definition stored with saga {saga_id} is not valid:"
                f" {exc.error_count()} errors, the first: {exc.errors()[0]['msg']}"
            ) from None
        return mapping.saga_record(instance, step_rows, definition=definition)


@dataclass(frozen=True)
class _Loaded:
    state: SagaState
    version: int
    last_seq: int | None
    """The saga's last history seq, when this transaction knows it for sure."""


class SqlUnitOfWork:
    """One open transaction; made by :meth:`SqlStore.transaction`, dead once it ends."""

    def __init__(
        self, connection: AsyncConnection, *, where: str, definitions: DefinitionCache
    ) -> None:
        self._connection = connection
        self._where = where
        self._definitions = definitions
        self._postgres = connection.dialect.name == "postgresql"
        self._loaded: dict[str, _Loaded] = {}
        self._open = True

    def close(self) -> None:
        """Refuse further use (the transaction has ended)."""
        self._open = False

    def touched(self) -> list[str]:
        """The sagas this unit of work read or wrote."""
        return list(self._loaded)

    async def _execute(
        self,
        statement: sa.Executable,
        params: Any = None,
        *,
        on_integrity: Callable[[sa_exc.IntegrityError], StoreError] | None = None,
    ) -> CursorResult[Any]:
        """Run one statement; driver errors become store errors, and a constraint
        violation the error ``on_integrity`` makes of it, when given."""
        if not self._open:
            raise RuntimeError("this unit of work's transaction has already ended")
        try:
            return await self._connection.execute(statement, params)
        except sa_exc.IntegrityError as exc:
            if on_integrity is not None:
                raise on_integrity(exc) from exc
            raise translate(exc, self._where) from exc
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, self._where) from exc

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    async def mark_processed(self, consumer: str, message_id: str, now: datetime) -> bool:
        """Record that ``consumer`` handled ``message_id``; False if it already had.

        A duplicate does not break the transaction (``ON CONFLICT DO NOTHING``). Call it
        before :meth:`load`: a concurrent duplicate then waits here, before taking the saga.
        """
        check_length("the consumer name", consumer, KEY_LENGTH)
        check_length("the message id", message_id, KEY_LENGTH)
        statement = (
            self._insert(processed_messages)
            .values(consumer=consumer, message_id=message_id, processed_at=now)
            .on_conflict_do_nothing()
        )
        result = await self._execute(statement)
        return result.rowcount == 1

    async def is_processed(self, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` handled ``message_id`` (as committed so far)."""
        statement = sa.select(sa.literal(1)).where(
            processed_messages.c.consumer == consumer,
            processed_messages.c.message_id == message_id,
        )
        return (await self._execute(statement)).first() is not None

    def last_seq(self, saga_id: str) -> int | None:
        """The saga's last history seq as this transaction knows it for sure, if it does."""
        loaded = self._loaded.get(saga_id)
        return None if loaded is None else loaded.last_seq

    async def find_by_key(self, name: str, idempotency_key: str) -> str | None:
        """The id of the saga started under this (name, key), if any."""
        statement = sa.select(instances.c.id).where(
            instances.c.name == name, instances.c.idempotency_key == idempotency_key
        )
        result = await self._execute(statement)
        found: str | None = result.scalar_one_or_none()
        return found

    async def load(self, saga_id: str, *, lock: bool = True) -> SagaRecord | None:
        """The saga, its row locked until the transaction ends when ``lock`` (PostgreSQL
        ``FOR UPDATE``; SQLite's write transactions already exclude each other)."""
        statement = sa.select(instances).where(instances.c.id == saga_id)
        if lock and self._postgres:
            statement = statement.with_for_update()
        row = (await self._execute(statement)).mappings().one_or_none()
        if row is None:
            return None
        step_rows = list((await self._execute(_steps_and_last_seq(saga_id))).mappings())
        record = self._definitions.record(saga_id, row, step_rows)
        # Without the lock (PostgreSQL, lock=False) another transaction may append
        # meanwhile: append_history then asks for the last seq itself.
        locked = lock or not self._postgres
        last_seq = (step_rows[0]["last_seq"] or 0) if step_rows and locked else None
        self._loaded[saga_id] = _Loaded(
            state=record.state, version=record.version, last_seq=last_seq
        )
        return record

    async def insert(
        self,
        state: SagaState,
        *,
        idempotency_key: str | None,
        trace_context: dict[str, str] | None,
        now: datetime,
    ) -> None:
        """Store a new saga (version 1); :class:`DuplicateSaga` if the id or the
        (name, key) is taken. The transaction stays usable after a duplicate."""
        check_length("the saga id", state.saga_id, ID_LENGTH)
        check_length("the saga name", state.definition.name, KEY_LENGTH)
        if idempotency_key is not None:
            check_length("the idempotency key", idempotency_key, KEY_LENGTH)
        row = mapping.instance_row(
            state, version=1, idempotency_key=idempotency_key, trace_context=trace_context, now=now
        )
        # DO NOTHING on any unique constraint (id, or name + key): a duplicate is an
        # answer, not an error that would abort a PostgreSQL transaction.
        result = await self._execute(self._insert(instances).values(row).on_conflict_do_nothing())
        if result.rowcount != 1:
            which = f"id {state.saga_id}"
            if idempotency_key is not None:
                which += f" or {state.definition.name} with idempotency key {idempotency_key!r}"
            raise DuplicateSaga(f"a saga with {which} already exists")
        step_rows = [mapping.step_row(state.saga_id, i, step) for i, step in enumerate(state.steps)]
        if step_rows:
            await self._execute(sa.insert(steps), step_rows)
        self._loaded[state.saga_id] = _Loaded(state=state, version=1, last_seq=0)

    async def update(self, state: SagaState, *, expected_version: int, now: datetime) -> int:
        """Write the new state and return the new version; :class:`StaleVersion` unless
        the stored version is ``expected_version``. Only changed step rows are written."""
        saga_id = state.saga_id
        loaded = self._loaded.get(saga_id)
        if loaded is not None and loaded.version != expected_version:
            loaded = None  # not the baseline the caller means: write everything
        reshaped = loaded is not None and len(loaded.state.steps) != len(state.steps)
        if loaded is None:
            changed = list(enumerate(state.steps))
        elif reshaped:
            changed = []  # a migration to a version with other steps: rows written anew
        else:
            changed = mapping.changed_steps(loaded.state.steps, state.steps)
        version = expected_version + 1
        if loaded is not None and _same(loaded.state, state):
            # Nothing changed (an ignored message): only the version moves, so that a
            # decision taken on the old version fails, and updated_at keeps its meaning.
            await self._update_version(saga_id, expected_version)
            return version
        values: dict[str, Any] = {
            "state": state.status,
            "output": state.output,
            "error": mapping.error_to_json(state.error),
            "deadline_at": state.deadline,
            "lock_version": version,
            "updated_at": now,
        }
        if loaded is None or not _same(loaded.state.input, state.input):
            values["input"] = state.input
        if loaded is None or not _same(loaded.state.definition, state.definition):
            check_length("the saga name", state.definition.name, KEY_LENGTH)
            values["definition"] = state.definition.model_dump(mode="json")
            values["name"] = state.definition.name
            values["version"] = state.definition.version
        await self._update_version(saga_id, expected_version, values)
        if reshaped:
            await self._execute(sa.delete(steps).where(steps.c.saga_id == saga_id))
            rows = [mapping.step_row(saga_id, i, step) for i, step in enumerate(state.steps)]
            await self._execute(sa.insert(steps), rows)
        if changed:
            params = []
            for index, step in changed:
                row = mapping.step_row(saga_id, index, step)
                row["key_saga_id"] = row.pop("saga_id")
                row["key_step_index"] = row.pop("step_index")
                params.append(row)
            await self._execute(_UPDATE_STEP, params)
        self._loaded[saga_id] = _Loaded(
            state=state, version=version, last_seq=loaded.last_seq if loaded else None
        )
        return version

    async def _update_version(
        self, saga_id: str, expected_version: int, values: dict[str, Any] | None = None
    ) -> None:
        statement = (
            sa.update(instances)
            .where(instances.c.id == saga_id, instances.c.lock_version == expected_version)
            .values(values or {"lock_version": expected_version + 1})
        )
        if (await self._execute(statement)).rowcount != 1:
            raise StaleVersion(
                f"saga {saga_id} is no longer at version {expected_version}: another"
                " transaction changed it first"
            )

    async def append_history(self, saga_id: str, records: Sequence[Record], now: datetime) -> None:
        """Append history events, numbered after the saga's last one."""
        if not records:
            return
        loaded = self._loaded.get(saga_id)
        last = loaded.last_seq if loaded is not None else None
        if last is None:
            statement = sa.select(sa.func.max(history.c.seq)).where(history.c.saga_id == saga_id)
            last = (await self._execute(statement)).scalar_one_or_none() or 0
        rows = [
            mapping.history_row(saga_id, last + offset, record, now)
            for offset, record in enumerate(records, start=1)
        ]

        def conflict(exc: sa_exc.IntegrityError) -> StoreError:
            if is_unique_violation(exc):
                return StaleVersion(
                    f"another transaction appended to the history of saga {saga_id} first"
                )
            return StoreError(f"cannot append history to saga {saga_id}: it is not stored")

        await self._execute(sa.insert(history), rows, on_integrity=conflict)
        if loaded is not None:
            self._loaded[saga_id] = _Loaded(
                state=loaded.state, version=loaded.version, last_seq=last + len(rows)
            )

    async def enqueue(self, messages: Sequence[OutboxMessage], now: datetime) -> list[int]:
        """Add messages to the outbox; returns their row ids in order."""
        if not messages:
            return []
        for message in messages:
            check_length("the message id", message.message_id, KEY_LENGTH)
        rows = [mapping.outbox_row(message, now) for message in messages]
        statement = sa.insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True)
        result = await self._execute(
            statement,
            rows,
            on_integrity=lambda exc: (
                StoreError(
                    "the outbox already holds a message with one of the ids "
                    + ", ".join(message.message_id for message in messages)
                )
                if is_unique_violation(exc)
                else translate(exc, self._where)
            ),
        )
        return [int(row[0]) for row in result]

    async def apply(self, transition: Transition) -> list[int] | None:
        """Write a transition: the inbox row, the saga at its next version (always, so that a
        decision taken on a stale read fails), its history and its outbox rows; None if the
        message was handled already. :class:`StaleVersion` if the saga moved meanwhile."""
        before = transition.before
        saga_id = before.state.saga_id
        if transition.inbox is not None:
            consumer, message_id = transition.inbox
            if not await self.mark_processed(consumer, message_id, transition.now):
                return None
        loaded = self._loaded.get(saga_id)
        if loaded is None or loaded.version != before.version:
            self._loaded[saga_id] = _Loaded(before.state, before.version, transition.last_seq)
        await self.update(transition.after, expected_version=before.version, now=transition.now)
        await self.append_history(saga_id, transition.history, transition.now)
        return await self.enqueue(transition.outbox, transition.now)

    async def claim_due(self, now: datetime, limit: int) -> list[DueTimer]:
        """Deadlines at or before ``now``, oldest first, at most ``limit``.

        On PostgreSQL the sagas' rows are locked with ``FOR UPDATE ... SKIP LOCKED``: two
        timer loops claim disjoint sets, and a saga a reply handler holds is left for the
        next round. The saga row (not the step row) is what is locked because every writer
        takes it first: the same order everywhere means no deadlock.
        """
        if limit < 1:
            return []
        statement = (
            sa.select(
                steps.c.saga_id,
                steps.c.name,
                steps.c.attempts,
                steps.c.compensation_attempts,
                steps.c.deadline_at,
                steps.c.deadline_kind,
                steps.c.deadline_purpose,
            )
            .where(steps.c.deadline_at.is_not(None), steps.c.deadline_at <= now)
            .order_by(steps.c.deadline_at, steps.c.saga_id, steps.c.step_index)
            .limit(limit)
        )
        if self._postgres:
            statement = statement.join_from(
                steps, instances, steps.c.saga_id == instances.c.id
            ).with_for_update(of=instances, skip_locked=True)
        result = await self._execute(statement)
        return [mapping.due_timer(row) for row in result.mappings()]

    async def claim_due_sagas(self, now: datetime, limit: int) -> list[str]:
        """Sagas whose own deadline has passed (see :meth:`claim_due` for the locking)."""
        if limit < 1:
            return []
        statement = (
            sa.select(instances.c.id)
            .where(instances.c.deadline_at.is_not(None), instances.c.deadline_at <= now)
            .order_by(instances.c.deadline_at, instances.c.id)
            .limit(limit)
        )
        if self._postgres:
            statement = statement.with_for_update(skip_locked=True)
        return list((await self._execute(statement)).scalars())
