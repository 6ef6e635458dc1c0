"""The short write paths, on both databases: a reply read in one statement and written in
one (PostgreSQL; the read is skipped for a saga this process wrote last), a keyed saga
created in one, and the guarantees they keep: a stale read or a handled message writes
nothing, two copies of one message write once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from store_helpers import T0, message, new_id, new_state, statements

from orchestrator.core.effects import Record
from orchestrator.core.state import HistoryType, SagaState, StepStatus
from orchestrator.store import NewSaga, Snapshot, StaleVersion, Transition
from orchestrator.stores import SqlStore

CONSUMER = "orchestrator.replies"


def _elsewhere(store: SqlStore) -> SqlStore:
    """The same database as another orchestrator process sees it (nothing remembered)."""
    return SqlStore(store.engine)


async def _stored(store: SqlStore) -> SagaState:
    state = new_state()
    async with store.transaction() as uow:
        await uow.insert(state, idempotency_key=None, trace_context=None, now=T0)
        await uow.append_history(state.saga_id, [Record(HistoryType.STARTED)], T0)
    return state


async def _reserved_here(store: SqlStore) -> SagaState:
    """A stored saga whose first reply this store applied: it remembers the saga."""
    state = await _stored(store)
    first = new_id()
    read = await store.snapshot(state.saga_id, inbox=(CONSUMER, first))
    assert await store.apply(_reserved(read, first)) is not None
    return state


def _reserved(snapshot: Snapshot, message_id: str, *, minutes: int = 1) -> Transition:
    """Step reserve succeeded: one step changes, two events, one command to send."""
    assert snapshot.record is not None
    state = snapshot.record.state
    step = replace(state.steps[0], status=StepStatus.SUCCEEDED, attempts=1, result={"r": 1})
    return Transition(
        before=snapshot.record,
        after=state.with_step(0, step),
        history=[
            Record(HistoryType.STEP_SUCCEEDED, step="reserve", attempt=1),
            Record(HistoryType.STEP_SENT, step="charge", attempt=1, detail={"why": "next"}),
        ],
        outbox=[message(1, state.saga_id), message(2, state.saga_id)],
        now=T0 + timedelta(minutes=minutes),
        last_seq=snapshot.last_seq,
        inbox=(CONSUMER, message_id),
    )


async def test_a_transition_is_written_whole(migrated_store: SqlStore) -> None:
    state = await _stored(migrated_store)
    message_id = new_id()
    before = await migrated_store.snapshot(state.saga_id, inbox=(CONSUMER, message_id))
    assert before.record is not None
    assert (before.last_seq, before.processed, before.record.version) == (1, False, 1)

    transition = _reserved(before, message_id)
    ids = await migrated_store.apply(transition)

    assert ids is not None
    unsent = await migrated_store.unsent(0)
    assert [m.id for m in unsent] == ids
    assert [m.message_id for m in unsent] == [m.message_id for m in transition.outbox]
    assert unsent[0].body == transition.outbox[0].body
    assert unsent[0].headers == transition.outbox[0].headers
    after = await _elsewhere(migrated_store).snapshot(state.saga_id, inbox=(CONSUMER, message_id))
    assert after.processed
    assert after.last_seq == 3
    assert after.record is not None
    assert after.record.state == transition.after
    assert after.record.version == 2
    assert after.record.updated_at == transition.now
    entries = await migrated_store.history(state.saga_id)
    assert [(e.seq, e.type, e.step) for e in entries[1:]] == [
        (2, "step_succeeded", "reserve"),
        (3, "step_sent", "charge"),
    ]
    assert entries[2].detail == {"why": "next"}


async def test_a_stale_read_writes_nothing(migrated_store: SqlStore) -> None:
    state = await _stored(migrated_store)
    first, second = new_id(), new_id()
    stale = await migrated_store.snapshot(state.saga_id, inbox=(CONSUMER, second))
    fresh = await migrated_store.snapshot(state.saga_id, inbox=(CONSUMER, first))
    assert await migrated_store.apply(_reserved(fresh, first)) is not None

    with pytest.raises(StaleVersion):
        await migrated_store.apply(_reserved(stale, second))

    again = await _elsewhere(migrated_store).snapshot(state.saga_id, inbox=(CONSUMER, second))
    assert not again.processed  # the loser's inbox row went with its write
    assert again.record is not None
    assert again.record.version == 2
    assert len(await migrated_store.unsent(0)) == 2
    assert len(await migrated_store.history(state.saga_id)) == 3


async def test_a_handled_message_is_not_applied_again(migrated_store: SqlStore) -> None:
    state = await _stored(migrated_store)
    message_id = new_id()
    read = await migrated_store.snapshot(state.saga_id, inbox=(CONSUMER, message_id))
    assert await migrated_store.apply(_reserved(read, message_id)) is not None

    # A redelivered copy is dropped at the read; one decided on the old read is refused at
    # the write (None on SQLite, whose transaction sees the inbox row; StaleVersion on
    # PostgreSQL, after which the read says it was handled).
    reread = await _elsewhere(migrated_store).snapshot(state.saga_id, inbox=(CONSUMER, message_id))
    assert reread.processed
    try:
        assert await migrated_store.apply(_reserved(read, message_id)) is None
    except StaleVersion:
        assert migrated_store.dialect == "postgresql"
    assert len(await migrated_store.unsent(0)) == 2


async def test_two_copies_of_a_message_at_once_write_once(migrated_store: SqlStore) -> None:
    state = await _stored(migrated_store)
    message_id = new_id()
    read = await migrated_store.snapshot(state.saga_id, inbox=(CONSUMER, message_id))

    outcomes = await asyncio.gather(
        migrated_store.apply(_reserved(read, message_id)),
        migrated_store.apply(_reserved(read, message_id, minutes=2)),
        return_exceptions=True,
    )

    written = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if o is None or isinstance(o, StaleVersion)]
    assert (len(written), len(refused)) == (1, 1), outcomes
    assert len(await migrated_store.unsent(0)) == 2
    assert len(await migrated_store.history(state.saga_id)) == 3


async def test_an_ignored_message_moves_only_the_version(migrated_store: SqlStore) -> None:
    state = await _stored(migrated_store)
    message_id = new_id()
    read = await migrated_store.snapshot(state.saga_id, inbox=(CONSUMER, message_id))
    assert read.record is not None
    ignored = Transition(
        before=read.record,
        after=read.record.state,
        history=[],
        outbox=[],
        now=T0 + timedelta(hours=1),
        last_seq=read.last_seq,
        inbox=(CONSUMER, message_id),
    )

    assert await migrated_store.apply(ignored) == []

    after = await _elsewhere(migrated_store).snapshot(state.saga_id, inbox=(CONSUMER, message_id))
    assert after.processed
    assert after.record is not None
    assert after.record.version == 2
    assert after.record.updated_at == T0


async def test_an_unknown_saga_reads_as_none(migrated_store: SqlStore) -> None:
    snapshot = await migrated_store.snapshot(new_id(), inbox=(CONSUMER, new_id()))
    assert snapshot == Snapshot(record=None, last_seq=0, processed=False)


async def test_a_reply_is_one_read_and_one_write_on_postgresql(postgres_store: SqlStore) -> None:
    state = await _stored(postgres_store)
    message_id = new_id()
    with statements(postgres_store.engine) as log:
        read = await postgres_store.snapshot(state.saga_id, inbox=(CONSUMER, message_id))
        assert await postgres_store.apply(_reserved(read, message_id)) is not None
    sql = [" ".join(s.sql.split())[:30] for s in log.statements]
    assert len(sql) == 2, sql
    assert sql[0].startswith("SELECT")
    assert sql[1].startswith("WITH saga AS ( UPDATE")


def _new_saga(key: str, message_id: str) -> NewSaga:
    state = new_state()
    return NewSaga(
        state=state,
        idempotency_key=key,
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        history=[Record(HistoryType.STARTED), Record(HistoryType.STEP_SENT, step="reserve")],
        outbox=[message(1, state.saga_id)],
        inbox=("orchestrator.start", message_id),
        now=T0,
    )


async def test_a_keyed_saga_is_created_in_one_statement(postgres_store: SqlStore) -> None:
    saga = _new_saga("order-1", new_id())
    with statements(postgres_store.engine) as log:
        ids = await postgres_store.create(saga)
    assert ids is not None
    assert len(log.statements) == 1

    record = await postgres_store.get(saga.state.saga_id)
    assert record is not None
    assert record.state == saga.state
    assert record.idempotency_key == "order-1"
    assert record.trace_context == saga.trace_context
    assert record.created_at == record.updated_at == T0
    assert [e.type for e in await postgres_store.history(saga.state.saga_id)] == [
        "started",
        "step_sent",
    ]
    assert [m.id for m in await postgres_store.unsent(0)] == ids
    read = await _elsewhere(postgres_store).snapshot(saga.state.saga_id, inbox=saga.inbox)
    assert read.processed
    assert read.last_seq == 2
    remembered = await postgres_store.snapshot(saga.state.saga_id, inbox=saga.inbox)
    assert remembered.record == read.record
    assert remembered.last_seq == 2


async def test_create_writes_nothing_when_the_key_or_message_is_taken(
    postgres_store: SqlStore,
) -> None:
    first = _new_saga("order-1", new_id())
    assert await postgres_store.create(first) is not None

    same_key = _new_saga("order-1", new_id())
    same_message = _new_saga("order-2", first.inbox[1])
    assert await postgres_store.create(same_key) is None
    assert await postgres_store.create(same_message) is None

    assert await postgres_store.get(same_key.state.saga_id) is None
    assert await postgres_store.get(same_message.state.saga_id) is None
    assert len(await postgres_store.unsent(0)) == 1
    read = await _elsewhere(postgres_store).snapshot(first.state.saga_id, inbox=same_key.inbox)
    assert not read.processed  # the general path records it, with its answer


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_creates_through_the_general_path(migrated_store: SqlStore) -> None:
    assert migrated_store.dialect == "sqlite"
    assert await migrated_store.create(_new_saga("order-1", new_id())) is None


async def test_the_next_reply_to_a_saga_written_here_is_one_statement(
    postgres_store: SqlStore,
) -> None:
    state = await _reserved_here(postgres_store)

    second = new_id()
    with statements(postgres_store.engine) as log:
        remembered = await postgres_store.snapshot(state.saga_id, inbox=(CONSUMER, second))
        assert remembered == await _elsewhere(postgres_store).snapshot(
            state.saga_id, inbox=(CONSUMER, second)
        )
        log.clear()
        # What the engine asks for every reply: the remembered saga expects it, no read.
        remembered = await postgres_store.snapshot(
            state.saga_id, inbox=(CONSUMER, second), expects=lambda saga: True
        )
        assert remembered.record is not None
        step = replace(remembered.record.state.steps[1], status=StepStatus.RUNNING, attempts=1)
        charged = Transition(
            before=remembered.record,
            after=remembered.record.state.with_step(1, step),
            history=[Record(HistoryType.STEP_SENT, step="ship", attempt=1)],
            outbox=[message(3, state.saga_id)],
            now=T0 + timedelta(minutes=2),
            last_seq=remembered.last_seq,
            inbox=(CONSUMER, second),
        )
        assert await postgres_store.apply(charged) is not None
    assert len(log.statements) == 1, [s.sql[:30] for s in log.statements]
    assert [e.seq for e in await postgres_store.history(state.saga_id)] == [1, 2, 3, 4]


async def test_what_is_remembered_is_only_a_guess(postgres_store: SqlStore) -> None:
    state = await _reserved_here(postgres_store)

    # Another process moves the saga: what this one remembers is stale, and refused.
    other, mine = new_id(), new_id()
    elsewhere = _elsewhere(postgres_store)
    their_read = await elsewhere.snapshot(state.saga_id, inbox=(CONSUMER, other))
    assert their_read.record is not None
    ignored = Transition(
        before=their_read.record,
        after=their_read.record.state,
        history=[Record(HistoryType.REPLY_IGNORED, step="reserve", attempt=1)],
        outbox=[],
        now=T0,
        last_seq=their_read.last_seq,
        inbox=(CONSUMER, other),
    )
    assert await elsewhere.apply(ignored) == []
    stale = await postgres_store.snapshot(state.saga_id, inbox=(CONSUMER, mine))
    assert stale.record is not None
    assert stale.record.version == 2
    with pytest.raises(StaleVersion):
        await postgres_store.apply(_reserved(stale, mine))
    fresh = await postgres_store.snapshot(state.saga_id, inbox=(CONSUMER, mine))
    assert fresh.record is not None
    assert (fresh.record.version, fresh.last_seq) == (3, 4)
    ignored_too = replace(ignored, before=fresh.record, last_seq=4, inbox=(CONSUMER, mine))
    assert await postgres_store.apply(ignored_too) == []

    # A duplicate of the message just applied, decided on what this process remembers.
    remembered = await postgres_store.snapshot(state.saga_id, inbox=(CONSUMER, mine))
    assert remembered.record is not None
    assert remembered.record.version == 4
    assert not remembered.processed  # not known from memory
    with pytest.raises(StaleVersion):
        await postgres_store.apply(replace(ignored_too, before=remembered.record, last_seq=5))
    reread = await postgres_store.snapshot(state.saga_id, inbox=(CONSUMER, mine))
    assert reread.processed  # the refusal sent the next read to the database
    assert [e.seq for e in await postgres_store.history(state.saga_id)] == [1, 2, 3, 4, 5]


async def test_a_remembered_saga_that_does_not_expect_the_message_is_read_again(
    postgres_store: SqlStore,
) -> None:
    state = await _reserved_here(postgres_store)

    # Another process moves the saga on; this one's memory is stale.
    other = new_id()
    elsewhere = _elsewhere(postgres_store)
    their_read = await elsewhere.snapshot(state.saga_id, inbox=(CONSUMER, other))
    assert their_read.record is not None
    assert await elsewhere.apply(replace(_reserved(their_read, other), history=[])) is not None

    mine = new_id()
    seen: list[int] = []

    def expects(saga: SagaState) -> bool:
        seen.append(len(seen))
        return False

    with statements(postgres_store.engine) as log:
        fresh = await postgres_store.snapshot(
            state.saga_id, inbox=(CONSUMER, mine), expects=expects
        )
    assert seen == [0]  # asked once, of the remembered saga
    assert len(log.statements) == 1  # and then read
    assert fresh.record is not None
    assert fresh.record.version == 3
    # Expecting it or not, what was read is not remembered: the next ask reads too.
    with statements(postgres_store.engine) as log:
        again = await postgres_store.snapshot(
            state.saga_id, inbox=(CONSUMER, mine), expects=lambda saga: True
        )
    assert len(log.statements) == 1
    assert again == fresh
