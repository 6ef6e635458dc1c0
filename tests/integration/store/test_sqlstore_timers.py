"""Claiming due deadlines, on both databases, and SKIP LOCKED on PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from store_helpers import T0, new_state, running_step

from orchestrator.core.state import DeadlinePurpose, Kind, SagaState
from orchestrator.store import DueTimer, UnitOfWork
from orchestrator.stores import SqlStore

REPLY, RETRY, COMPENSATION = DeadlinePurpose.REPLY, DeadlinePurpose.RETRY, Kind.COMPENSATION


async def _sagas_due_at(store: SqlStore, *offsets: int) -> list[SagaState]:
    """One saga per offset, its first step waiting for a reply until T0 + offset seconds."""
    states = [running_step(new_state(), 0, T0 + timedelta(seconds=s)) for s in offsets]
    async with store.transaction() as uow:
        for state in states:
            await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
    return states


async def _handle(uow: UnitOfWork, timers: list[DueTimer]) -> None:
    """What the timer loop does with claimed deadlines: handle them, which moves them."""
    for timer in timers:
        record = await uow.load(timer.saga_id)
        assert record is not None
        step = replace(record.state.steps[0], deadline=None)
        await uow.update(record.state.with_step(0, step), expected_version=1, now=T0)


async def test_only_due_deadlines_are_claimed_oldest_first(migrated_store: SqlStore) -> None:
    late, first, exact, future = await _sagas_due_at(migrated_store, 5, -10, 0, 60)
    compensating = running_step(new_state(), 1, T0 - timedelta(seconds=1), Kind.COMPENSATION)
    async with migrated_store.transaction() as uow:
        await uow.insert(compensating, idempotency_key=None, trace_context=None, now=T0)

    now = T0 + timedelta(seconds=5)
    async with migrated_store.transaction() as uow:
        due = await uow.claim_due(now, 10)
        assert await uow.claim_due(now, 0) == []
    assert due == [
        DueTimer(first.saga_id, "reserve", Kind.ACTION, 1, REPLY, T0 - timedelta(seconds=10)),
        DueTimer(compensating.saga_id, "charge", COMPENSATION, 5, RETRY, T0 - timedelta(seconds=1)),
        DueTimer(exact.saga_id, "reserve", Kind.ACTION, 1, REPLY, T0),
        DueTimer(late.saga_id, "reserve", Kind.ACTION, 1, REPLY, now),
    ]
    assert future.saga_id not in {timer.saga_id for timer in due}

    async with migrated_store.transaction() as uow:
        assert [t.saga_id for t in await uow.claim_due(now, 2)] == [
            first.saga_id,
            compensating.saga_id,
        ]


async def test_concurrent_claims_get_disjoint_deadlines(migrated_store: SqlStore) -> None:
    """Two timer loops at once never claim the same deadline. On PostgreSQL the second
    skips the rows the first has locked, while the first is still open; on SQLite the
    second waits for the first (BEGIN IMMEDIATE) and then finds the deadlines moved."""
    states = await _sagas_due_at(migrated_store, -5, -4, -3, -2, -1)
    postgres = migrated_store.dialect == "postgresql"
    first_claimed = asyncio.Event()
    first_may_finish = asyncio.Event()

    async def first() -> list[DueTimer]:
        async with migrated_store.transaction() as uow:
            timers = await uow.claim_due(T0, 2)
            first_claimed.set()
            if postgres:
                await first_may_finish.wait()
            await _handle(uow, timers)
        return timers

    async def second() -> list[DueTimer]:
        await first_claimed.wait()
        async with migrated_store.transaction() as uow:
            timers = await uow.claim_due(T0, 10)
        first_may_finish.set()
        return timers

    first_timers, second_timers = await asyncio.wait_for(asyncio.gather(first(), second()), 20)
    assert [t.saga_id for t in first_timers] == [s.saga_id for s in states[:2]]
    assert [t.saga_id for t in second_timers] == [s.saga_id for s in states[2:]]


async def test_a_saga_held_by_a_reply_handler_is_left_for_later(postgres_store: SqlStore) -> None:
    held, free = await _sagas_due_at(postgres_store, -2, -1)
    async with postgres_store.transaction() as handler:
        assert await handler.load(held.saga_id) is not None  # FOR UPDATE
        async with postgres_store.transaction() as timers:
            assert [t.saga_id for t in await timers.claim_due(T0, 10)] == [free.saga_id]
    async with postgres_store.transaction() as timers:
        assert [t.saga_id for t in await timers.claim_due(T0, 10)] == [held.saga_id, free.saga_id]
