"""The relay marks confirmed rows sent in batches: while one batch is being marked, the rows
other publishes confirm meanwhile gather and go in the next transaction, and each publish
returns only once its own rows are marked (or the database refused them)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from orchestrator.outbox import OutboxRelay
from orchestrator.store import OutboxMessage, Store, StoreUnavailable
from orchestrator.transport import Transport


class ConfirmingTransport:
    async def publish(self, **_: Any) -> None:
        await asyncio.sleep(0)


class GatedStore:
    """mark_sent waits for ``gate`` while ``hold`` is set; records each call's ids."""

    def __init__(self) -> None:
        self.marked: list[list[int]] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.fail = False

    async def mark_sent(self, ids: Sequence[int], now: datetime) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.fail:
            raise StoreUnavailable("the database is gone")
        self.marked.append(list(ids))


def _row(row_id: int) -> OutboxMessage:
    return OutboxMessage(
        message_id=f"m-{row_id}", exchange="x", routing_key="k", body=b"{}", id=row_id
    )


def _relay(store: GatedStore) -> OutboxRelay:
    return OutboxRelay(
        cast(Store, store), cast(Transport, ConfirmingTransport()), lambda: datetime.now(UTC)
    )


async def test_rows_confirmed_while_a_batch_is_marked_go_together_in_the_next() -> None:
    store = GatedStore()
    relay = _relay(store)
    first = asyncio.create_task(relay.publish([_row(1)]))
    await store.entered.wait()
    later = [asyncio.create_task(relay.publish([_row(i)])) for i in (2, 3, 4)]
    async with asyncio.timeout(5):
        # Until the three later rows wait for the next batch (relay state, no event).
        while len(relay._to_mark) < 3:  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert not first.done(), "a publish returns once its rows are marked"
    store.gate.set()
    assert await asyncio.gather(first, *later) == [1, 1, 1, 1]
    assert store.marked == [[1], [2, 3, 4]]
    assert relay.published == 4


async def test_rows_the_database_refused_to_mark_count_as_not_sent() -> None:
    store = GatedStore()
    store.fail = True
    store.gate.set()
    relay = _relay(store)
    assert await relay.publish([_row(1), _row(2)]) == 0
    assert relay.published == 0
    # The next publish starts a new batch: one failure does not stop the marking.
    store.fail = False
    assert await relay.publish([_row(3)]) == 1
    assert store.marked == [[3]]


class HeldTransport:
    """Every publish waits for ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def publish(self, **_: Any) -> None:
        await self.release.wait()


async def test_room_waits_while_max_publishing_rows_are_unconfirmed() -> None:
    store = GatedStore()
    store.gate.set()
    transport = HeldTransport()
    relay = OutboxRelay(
        cast(Store, store), cast(Transport, transport), lambda: datetime.now(UTC), max_publishing=3
    )
    relay.submit([_row(1), _row(2)])
    await asyncio.wait_for(relay.room(), 1)  # two of three: still room
    relay.submit([_row(3)])
    waiting = asyncio.create_task(relay.room())
    await asyncio.sleep(0.05)
    assert not waiting.done(), "three rows in flight: a consumer must wait before it acks"
    transport.release.set()
    await asyncio.wait_for(waiting, 1)
    await relay.flush()
    assert sorted(i for batch in store.marked for i in batch) == [1, 2, 3]
