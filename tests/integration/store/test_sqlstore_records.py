"""The inbox, history, outbox, listing and pruning, on both databases."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from store_helpers import T0, message, new_id, new_state

from orchestrator.core.effects import Record
from orchestrator.core.state import HistoryType, SagaStatus
from orchestrator.store import HistoryEntry, StoreError
from orchestrator.stores import SqlStore


async def test_a_message_is_processed_once(migrated_store: SqlStore) -> None:
    message_id = new_id()
    state = new_state()
    async with migrated_store.transaction() as uow:
        assert await uow.mark_processed("orchestrator", message_id, T0) is True
        assert await uow.mark_processed("orchestrator", message_id, T0) is False
        # Another consumer has its own record of the same message.
        assert await uow.mark_processed("inventory", message_id, T0) is True

    async with migrated_store.transaction() as uow:
        assert await uow.mark_processed("orchestrator", message_id, T0) is False
        # The duplicate did not spoil the transaction: the rest of it commits.
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
    assert await migrated_store.get(state.saga_id) is not None


async def test_history_is_numbered_in_order_across_transactions(migrated_store: SqlStore) -> None:
    state = new_state()
    async with migrated_store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
        await uow.append_history(state.saga_id, [Record(HistoryType.STARTED)], T0)
        await uow.append_history(
            state.saga_id, [Record(HistoryType.STEP_SENT, step="reserve", attempt=1)], T0
        )

    later = T0 + timedelta(seconds=1)
    async with migrated_store.transaction() as uow:
        record = await uow.load(state.saga_id)
        assert record is not None
        await uow.append_history(
            state.saga_id,
            [
                Record(HistoryType.STEP_FAILED, "reserve", 1, {"code": "busy", "retryable": True}),
                Record(HistoryType.STEP_SENT, "reserve", 2),
            ],
            later,
        )

    # Without a load first, the store looks the last number up itself.
    async with migrated_store.transaction() as uow:
        await uow.append_history(
            state.saga_id, [Record(HistoryType.STEP_SUCCEEDED, "reserve", 2)], later
        )
        await uow.append_history(state.saga_id, [], later)

    assert await migrated_store.history(state.saga_id) == [
        HistoryEntry(1, T0, "started", None, None, {}),
        HistoryEntry(2, T0, "step_sent", "reserve", 1, {}),
        HistoryEntry(3, later, "step_failed", "reserve", 1, {"code": "busy", "retryable": True}),
        HistoryEntry(4, later, "step_sent", "reserve", 2, {}),
        HistoryEntry(5, later, "step_succeeded", "reserve", 2, {}),
    ]
    assert await migrated_store.history("no-such-saga") == []


async def test_history_of_an_unknown_saga_is_refused(migrated_store: SqlStore) -> None:
    with pytest.raises(StoreError, match="no-such-saga"):
        async with migrated_store.transaction() as uow:
            await uow.append_history("no-such-saga", [Record(HistoryType.STARTED)], T0)


async def test_outbox_messages_wait_until_marked_sent(migrated_store: SqlStore) -> None:
    messages = [message(i, "s-1" if i else None) for i in range(3)]
    async with migrated_store.transaction() as uow:
        ids = await uow.enqueue(messages, T0)
        assert await uow.enqueue([], T0) == []
    assert ids == sorted(ids)
    assert len(set(ids)) == 3

    later = T0 + timedelta(minutes=1)
    async with migrated_store.transaction() as uow:
        late = message(3)
        [late_id] = await uow.enqueue([late], later)

    unsent = await migrated_store.unsent(0)
    assert unsent == [
        replace(m, id=i, created_at=T0) for m, i in zip(messages, ids, strict=True)
    ] + [replace(late, id=late_id, created_at=later)]
    assert unsent[0].body == messages[0].body  # bytes, NUL and 0xff included
    assert [m.id for m in await migrated_store.unsent(2)] == ids[:2]
    assert [m.id for m in await migrated_store.unsent(10, older_than=T0)] == ids

    await migrated_store.mark_sent([ids[0], ids[2]], later)
    await migrated_store.mark_sent([], later)
    assert [m.id for m in await migrated_store.unsent(10)] == [ids[1], late_id]
    # Marking again changes nothing (and the first time stays the sent time).
    await migrated_store.mark_sent([ids[0]], later + timedelta(days=1))
    assert [m.id for m in await migrated_store.unsent(10)] == [ids[1], late_id]


async def test_a_message_id_is_enqueued_once(migrated_store: SqlStore) -> None:
    duplicate = message(1)
    async with migrated_store.transaction() as uow:
        await uow.enqueue([duplicate], T0)
    with pytest.raises(StoreError, match=duplicate.message_id):
        async with migrated_store.transaction() as uow:
            await uow.enqueue([duplicate], T0)
    assert len(await migrated_store.unsent(0)) == 1


async def test_many_ids_are_marked_sent_in_chunks(migrated_store: SqlStore) -> None:
    async with migrated_store.transaction() as uow:
        ids = await uow.enqueue([message(i) for i in range(1203)], T0)
    assert len(ids) == 1203
    assert ids == sorted(ids)
    await migrated_store.mark_sent(ids[:1202], T0)
    assert [m.id for m in await migrated_store.unsent(0)] == ids[1202:]


async def test_sagas_are_listed_newest_first(migrated_store: SqlStore) -> None:
    made = []
    async with migrated_store.transaction() as uow:
        for n in range(5):
            state = new_state(name="refund" if n % 2 else "order")
            if n == 3:
                state = replace(state, status=SagaStatus.FAILED)
            await uow.insert(
                state, idempotency_key=None, trace_context=None, now=T0 + timedelta(seconds=n)
            )
            made.append(state)
    newest_first = [s.saga_id for s in reversed(made)]

    everything = await migrated_store.list_sagas(limit=0)
    assert [s.id for s in everything] == newest_first
    assert everything[0].name == "order"
    assert everything[0].version == 2
    assert everything[0].state is SagaStatus.RUNNING
    assert everything[0].created_at == T0 + timedelta(seconds=4)
    assert [s.id for s in await migrated_store.list_sagas(limit=2)] == newest_first[:2]
    assert [s.id for s in await migrated_store.list_sagas(name="refund")] == [
        made[3].saga_id,
        made[1].saga_id,
    ]
    assert [s.id for s in await migrated_store.list_sagas(state=SagaStatus.FAILED)] == [
        made[3].saga_id
    ]
    assert await migrated_store.list_sagas(state=SagaStatus.FAILED, name="order") == []
    assert await migrated_store.list_sagas(name="'; DROP TABLE saga_instances;--") == []
    assert len(await migrated_store.list_sagas()) == 5


async def test_prune_deletes_old_inbox_ids_and_sent_messages_only(
    migrated_store: SqlStore,
) -> None:
    old, new = T0, T0 + timedelta(days=8)
    async with migrated_store.transaction() as uow:
        await uow.mark_processed("orchestrator", "old", old)
        await uow.mark_processed("orchestrator", "new", new)
        sent_old, sent_new, unsent_old = await uow.enqueue([message(i) for i in range(3)], old)
    await migrated_store.mark_sent([sent_old], old)
    await migrated_store.mark_sent([sent_new], new)

    cutoff = T0 + timedelta(days=7)
    assert await migrated_store.prune(processed_before=cutoff, sent_before=cutoff) == 2
    assert await migrated_store.prune(processed_before=cutoff, sent_before=cutoff) == 0

    async with migrated_store.transaction() as uow:
        assert await uow.mark_processed("orchestrator", "old", new) is True  # forgotten
        assert await uow.mark_processed("orchestrator", "new", new) is False  # kept
    assert [m.id for m in await migrated_store.unsent(0)] == [unsent_old]
    # The sent message that is too recent to prune is still there.
    far = T0 + timedelta(days=30)
    assert await migrated_store.prune(processed_before=T0, sent_before=far) == 1


async def test_prune_in_batches_leaves_the_rest_for_the_next(migrated_store: SqlStore) -> None:
    async with migrated_store.transaction() as uow:
        for index in range(5):
            await uow.mark_processed("orchestrator", f"m-{index}", T0 + timedelta(seconds=index))
        ids = await uow.enqueue([message(i) for i in range(3)], T0)
    await migrated_store.mark_sent(ids, T0)
    cutoff = T0 + timedelta(days=1)

    assert await migrated_store.prune(processed_before=cutoff, sent_before=cutoff, limit=2) == 4
    assert await migrated_store.prune(processed_before=cutoff, sent_before=cutoff, limit=2) == 3
    assert await migrated_store.prune(processed_before=cutoff, sent_before=cutoff, limit=2) == 1
    assert await migrated_store.prune(processed_before=cutoff, sent_before=cutoff, limit=2) == 0
