"""Saga state in the SQL store, on both databases: round trips, uniqueness, optimistic
concurrency, writing only what changed, and the statements a reply costs."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from datetime import timedelta

import pytest
from store_helpers import T0, full_state, message, new_id, new_state, statements

from orchestrator.core.effects import Record
from orchestrator.core.state import HistoryType, SagaStatus, StepStatus
from orchestrator.store import DuplicateSaga, StaleVersion, Store, UnitOfWork
from orchestrator.stores import SqlStore, SqlUnitOfWork


@pytest.mark.parametrize(("port", "adapter"), [(Store, SqlStore), (UnitOfWork, SqlUnitOfWork)])
def test_the_sql_store_implements_the_port(port: type, adapter: type) -> None:
    # mypy checks the types (the assignments below); this checks the parameter names.
    _store: type[Store] = SqlStore
    _unit: type[UnitOfWork] = SqlUnitOfWork
    methods = [name for name in vars(port) if not name.startswith("_")]
    assert methods
    for name in methods:
        expected = inspect.signature(getattr(port, name))
        assert inspect.signature(getattr(adapter, name)).parameters == expected.parameters, name


async def test_every_field_round_trips(migrated_store: SqlStore) -> None:
    state = full_state()
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key="key-1", trace_context=trace, now=T0)

    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert record.state == state
    assert record.state.definition == state.definition
    assert record.state.steps[0].error is not None
    assert record.state.steps[0].error.retryable
    assert record.version == 1
    assert record.idempotency_key == "key-1"
    assert record.trace_context == trace
    assert record.created_at == T0
    assert record.updated_at == T0
    assert record.created_at.tzinfo is not None
    assert record.created_at.utcoffset() == timedelta(0)
    deadline = record.state.steps[1].deadline
    assert deadline is not None
    assert deadline.at == T0 + timedelta(seconds=30)

    # And through an update: every field written back reads back equal.
    later = T0 + timedelta(minutes=5)
    changed = replace(new_state(state.saga_id), output=None, error=None, input={"n": None})
    async with migrated_store.transaction() as uow:
        assert await uow.update(changed, expected_version=1, now=later) == 2
    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert record.state == changed
    assert (record.version, record.created_at, record.updated_at) == (2, T0, later)


async def test_an_unknown_saga_is_none(migrated_store: SqlStore) -> None:
    assert await migrated_store.get("no-such-saga") is None
    async with migrated_store.transaction() as uow:
        assert await uow.load("no-such-saga") is None
        assert await uow.find_by_key("order", "no-such-key") is None


async def test_ids_and_idempotency_keys_are_unique(migrated_store: SqlStore) -> None:
    first = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(first, idempotency_key="k", trace_context=None, now=T0)
        # Same key, another saga name: allowed. No key: never a conflict.
        await uow.insert(new_state(name="refund"), idempotency_key="k", trace_context=None, now=T0)
        await uow.insert(new_state(), idempotency_key=None, trace_context=None, now=T0)
        await uow.insert(new_state(), idempotency_key=None, trace_context=None, now=T0)

    async with migrated_store.transaction() as uow:
        with pytest.raises(DuplicateSaga, match="idempotency key 'k'"):
            await uow.insert(new_state(), idempotency_key="k", trace_context=None, now=T0)
        with pytest.raises(DuplicateSaga, match=first.saga_id):
            await uow.insert(first, idempotency_key=None, trace_context=None, now=T0)
        # The transaction is still usable after a duplicate (no aborted PostgreSQL txn).
        assert await uow.find_by_key("order", "k") == first.saga_id
        survivor = new_state()
        await uow.insert(survivor, idempotency_key="k2", trace_context=None, now=T0)

    assert await migrated_store.get(survivor.saga_id) is not None
    assert len(await migrated_store.list_sagas(limit=0)) == 5


async def test_a_stale_version_is_refused(migrated_store: SqlStore) -> None:
    state = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
    seen = await migrated_store.get(state.saga_id)
    assert seen is not None
    assert seen.version == 1

    running = replace(state, status=SagaStatus.COMPENSATING)
    async with migrated_store.transaction() as uow:
        record = await uow.load(state.saga_id)
        assert record is not None
        await uow.update(running, expected_version=record.version, now=T0)

    with pytest.raises(StaleVersion, match=f"saga {state.saga_id} is no longer at version 1"):
        async with migrated_store.transaction() as uow:
            await uow.update(state, expected_version=seen.version, now=T0)
    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert record.version == 2
    assert record.state.status is SagaStatus.COMPENSATING


async def test_concurrent_writers_queue_up_instead_of_failing(migrated_store: SqlStore) -> None:
    """Each writer loads (locking) and updates: on SQLite BEGIN IMMEDIATE, on PostgreSQL
    FOR UPDATE make them take turns, so no one sees a stale version or a deadlock."""
    state = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)

    async def bump(n: int) -> None:
        async with migrated_store.transaction() as uow:
            record = await uow.load(state.saga_id)
            assert record is not None
            attempts = record.state.steps[0].attempts + 1
            step = replace(record.state.steps[0], attempts=attempts)
            await uow.update(
                record.state.with_step(0, step), expected_version=record.version, now=T0
            )
            await uow.append_history(state.saga_id, [Record(HistoryType.STEP_SENT, attempt=n)], T0)

    await asyncio.gather(*(bump(n) for n in range(8)))
    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert (record.version, record.state.steps[0].attempts) == (9, 8)
    assert [entry.seq for entry in await migrated_store.history(state.saga_id)] == list(range(1, 9))


async def test_update_writes_only_the_steps_that_changed(migrated_store: SqlStore) -> None:
    state = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)

    with statements(migrated_store.engine) as log:
        async with migrated_store.transaction() as uow:
            record = await uow.load(state.saga_id)
            assert record is not None
            one = record.state.with_step(1, replace(state.steps[1], status=StepStatus.RUNNING))
            version = await uow.update(one, expected_version=1, now=T0)
            assert log.matching("UPDATE SAGA_STEPS")[-1].rows == 1
            # Nothing changed in the steps since the last update: only the saga row.
            log.clear()
            version = await uow.update(replace(one, output=[1]), expected_version=version, now=T0)
            assert log.matching("UPDATE SAGA_STEPS") == []
            # Two steps changed: one executemany of two rows.
            two = one.with_step(0, replace(one.steps[0], attempts=1)).with_step(
                2, replace(one.steps[2], result={"x": 1})
            )
            await uow.update(two, expected_version=version, now=T0)
            [update] = log.matching("UPDATE SAGA_STEPS")
            assert update.rows == 2

    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert record.state == two
    assert record.version == 4


async def test_update_without_load_writes_every_step(migrated_store: SqlStore) -> None:
    state = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
    changed = full_state(state.saga_id)
    with statements(migrated_store.engine) as log:
        async with migrated_store.transaction() as uow:
            await uow.update(changed, expected_version=1, now=T0)
    [update] = log.matching("UPDATE SAGA_STEPS")
    assert update.rows == 3
    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert record.state == changed


async def test_a_reply_costs_few_statements(migrated_store: SqlStore) -> None:
    """The hot path: inbox, load, update of one step, two history rows, one message."""
    state = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
        await uow.append_history(state.saga_id, [Record(HistoryType.STARTED)], T0)

    with statements(migrated_store.engine) as log:
        async with migrated_store.transaction() as uow:
            assert await uow.mark_processed("orchestrator", new_id(), T0)
            record = await uow.load(state.saga_id)
            assert record is not None
            step = replace(record.state.steps[0], status=StepStatus.SUCCEEDED, attempts=1)
            await uow.update(record.state.with_step(0, step), expected_version=1, now=T0)
            await uow.append_history(
                state.saga_id,
                [
                    Record(HistoryType.STEP_SUCCEEDED, step="reserve", attempt=1),
                    Record(HistoryType.STEP_SENT, step="charge", attempt=1),
                ],
                T0,
            )
            await uow.enqueue([message(1, state.saga_id)], T0)
    sql = [" ".join(s.sql.split())[:40] for s in log.statements]
    # BEGIN (SQLite; asyncpg's BEGIN is not a cursor statement), inbox insert, saga row,
    # step rows, saga update, step update, history insert, outbox insert, COMMIT (driver).
    assert len(log.statements) <= 8, sql
    assert len(log.matching("SELECT")) == 2, sql
    assert [entry.seq for entry in await migrated_store.history(state.saga_id)] == [1, 2, 3]
