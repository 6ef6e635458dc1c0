"""Rollback, hostile values, limits and lost connections: nothing half-written, nothing
interpreted, and no driver exception escapes the store."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from services import PostgresService
from sqlalchemy.engine import make_url
from store_helpers import T0, message, new_id, new_state

from orchestrator.core.effects import Record
from orchestrator.core.state import ErrorInfo, HistoryType, StepStatus
from orchestrator.store import OutboxMessage, StaleVersion, StoreUnavailable
from orchestrator.stores import InvalidValue, SqlStore
from orchestrator.stores.engine import DEFAULT_POOL_SIZE

HOSTILE = "'; DROP TABLE saga_instances;--"
BIG = "x\"'\\%_;" * 1500  # 10.5 KB of quotes, backslashes and LIKE wildcards


class Boom(Exception):
    """Raised by a test inside a transaction."""


async def test_an_exception_rolls_everything_back(migrated_store: SqlStore) -> None:
    state = new_state()

    async def write_everything_then_fail() -> None:
        async with migrated_store.transaction() as uow:
            assert await uow.mark_processed("orchestrator", "m-1", T0)
            await uow.insert(state, idempotency_key="k", trace_context=None, now=T0)
            await uow.append_history(state.saga_id, [Record(HistoryType.STARTED)], T0)
            await uow.enqueue([message(1, state.saga_id)], T0)
            raise Boom

    with pytest.raises(Boom):
        await write_everything_then_fail()

    assert await migrated_store.get(state.saga_id) is None
    assert await migrated_store.history(state.saga_id) == []
    assert await migrated_store.unsent(0) == []
    assert await migrated_store.list_sagas(limit=0) == []
    async with migrated_store.transaction() as uow:
        assert await uow.mark_processed("orchestrator", "m-1", T0) is True
        assert await uow.find_by_key("order", "k") is None


async def test_a_store_error_rolls_back_the_whole_transaction(migrated_store: SqlStore) -> None:
    state = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)

    async def process_a_stale_update() -> None:
        async with migrated_store.transaction() as uow:
            await uow.mark_processed("orchestrator", "m-2", T0)
            await uow.update(state, expected_version=7, now=T0)

    with pytest.raises(StaleVersion):
        await process_a_stale_update()
    async with migrated_store.transaction() as uow:
        assert await uow.mark_processed("orchestrator", "m-2", T0) is True


async def test_a_finished_unit_of_work_cannot_be_used(migrated_store: SqlStore) -> None:
    async with migrated_store.transaction() as uow:
        pass
    with pytest.raises(RuntimeError, match="already ended"):
        await uow.load("anything")


async def test_sql_metacharacters_and_big_values_are_stored_literally(
    migrated_store: SqlStore,
) -> None:
    state = new_state(input={HOSTILE: BIG, "list": [HOSTILE, BIG]})
    failed = replace(
        state.steps[0],
        status=StepStatus.FAILED,
        result=BIG,
        error=ErrorInfo(code=HOSTILE, message=BIG, step=HOSTILE),
    )
    state = state.with_step(0, failed)
    hostile_message = OutboxMessage(
        message_id=HOSTILE,
        exchange=HOSTILE,
        routing_key=BIG,
        body=BIG.encode(),
        headers={HOSTILE: BIG},
        correlation_id=BIG,
        reply_to=HOSTILE,
        type=BIG,
        saga_id=state.saga_id,
    )
    async with migrated_store.transaction() as uow:
        assert await uow.mark_processed(HOSTILE, HOSTILE, T0)
        await uow.insert(state, idempotency_key=HOSTILE, trace_context={HOSTILE: BIG}, now=T0)
        await uow.append_history(
            state.saga_id, [Record(HistoryType.STEP_FAILED, HOSTILE, 1, {HOSTILE: BIG})], T0
        )
        [outbox_id] = await uow.enqueue([hostile_message], T0)

    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert record.state == state
    assert record.idempotency_key == HOSTILE
    assert record.trace_context == {HOSTILE: BIG}
    [entry] = await migrated_store.history(state.saga_id)
    assert (entry.step, entry.detail) == (HOSTILE, {HOSTILE: BIG})
    assert await migrated_store.unsent(0) == [replace(hostile_message, id=outbox_id, created_at=T0)]
    async with migrated_store.transaction() as uow:
        assert await uow.find_by_key("order", HOSTILE) == state.saga_id
        assert await uow.find_by_key("order", "%") is None
        assert await uow.mark_processed(HOSTILE, HOSTILE, T0) is False
    assert len(await migrated_store.list_sagas(limit=0)) == 1  # the table is still there


async def test_values_too_long_to_index_are_refused_the_same_way_everywhere(
    migrated_store: SqlStore,
) -> None:
    async with migrated_store.transaction() as uow:
        with pytest.raises(InvalidValue, match="the idempotency key is 10500 characters long"):
            await uow.insert(new_state(), idempotency_key=BIG, trace_context=None, now=T0)
        with pytest.raises(InvalidValue, match="message id"):
            await uow.mark_processed("orchestrator", BIG, T0)
        with pytest.raises(InvalidValue, match="message id"):
            await uow.enqueue([replace(message(1), message_id=BIG)], T0)
        with pytest.raises(InvalidValue, match="saga id"):
            await uow.insert(new_state(BIG), idempotency_key=None, trace_context=None, now=T0)
        # 255 characters is fine.
        await uow.insert(new_state(), idempotency_key="k" * 255, trace_context=None, now=T0)


async def test_naive_datetimes_are_refused(migrated_store: SqlStore) -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(InvalidValue, match="naive datetime"):
        async with migrated_store.transaction() as uow:
            await uow.mark_processed("orchestrator", new_id(), naive)


async def test_a_nul_character_is_stored_by_sqlite_and_refused_by_postgresql(
    migrated_store: SqlStore,
) -> None:
    state = new_state(input={"text": "a\x00b"})
    if migrated_store.dialect == "postgresql":
        with pytest.raises(InvalidValue, match="refused a value"):
            async with migrated_store.transaction() as uow:
                await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
        return
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
    record = await migrated_store.get(state.saga_id)
    assert record is not None
    assert record.state.input == {"text": "a\x00b"}


async def test_the_store_reconnects_after_postgresql_drops_its_connections(
    postgres_store: SqlStore, postgres_url: str, postgres_service: PostgresService
) -> None:
    server = await postgres_service.server()
    state = new_state()
    async with postgres_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
    database = make_url(postgres_url).database
    # As in a PostgreSQL restart, every pooled connection dies. A connection whose end the
    # driver has not read yet (the backend may still be exiting) fails its first statement
    # as StoreUnavailable, which callers retry; it is discarded, and the store serves again.
    await server.admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :database",
        {"database": database},
    )
    # Each failure discards one stale pooled connection, so at most the pool's size fail.
    failures = 0
    while True:
        try:
            record = await postgres_store.get(state.saga_id)
            break
        except StoreUnavailable:
            failures += 1
            assert failures <= DEFAULT_POOL_SIZE, "the store did not recover"
    assert record is not None

    # When the database is gone, the store says so in its own terms.
    await server.admin(f'DROP DATABASE "{database}" WITH (FORCE)')
    with pytest.raises(StoreUnavailable, match=f'database "{database}" does not exist'):
        async with postgres_store.transaction() as uow:
            await uow.load(state.saga_id)
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        await postgres_store.history(state.saga_id)
