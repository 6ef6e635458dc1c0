"""What the transport promises the outbox, against the real broker: a publish returns only
once the broker has the message (publisher confirms), a message no queue takes is an error
(mandatory + returns), and a message the broker refuses is an error (a nack), so a row is
never marked sent for a message that went nowhere."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest

from orchestrator.outbox import OutboxRelay
from orchestrator.store import OutboxMessage
from orchestrator.stores.sql import SqlStore
from orchestrator.transport import Delivery, PublishFailed, Unroutable
from orchestrator.transports.amqp import AmqpTransport

pytestmark = pytest.mark.rabbitmq


async def _full_queue(amqp_url: str) -> str:
    """A queue that holds one message and refuses the next (publishers get a nack)."""
    name = f"guarantees.full.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )
    return name


async def test_a_message_no_queue_takes_raises_unroutable(amqp_url: str) -> None:
    transport = AmqpTransport(amqp_url, name="test-guarantees")
    await transport.connect()
    try:
        with pytest.raises(Unroutable, match="no queue is bound"):
            await transport.publish(
                exchange="", routing_key="no.such.queue", body=b"{}", message_id="m-1"
            )
    finally:
        await transport.close()


async def test_a_message_the_broker_refuses_raises_publish_failed(amqp_url: str) -> None:
    queue = await _full_queue(amqp_url)
    transport = AmqpTransport(amqp_url, name="test-guarantees")
    await transport.connect()
    try:
        await transport.publish(exchange="", routing_key=queue, body=b"{}", message_id="m-1")
        with pytest.raises(PublishFailed, match="refused"):
            await transport.publish(exchange="", routing_key=queue, body=b"{}", message_id="m-2")
    finally:
        await transport.close()


async def test_the_relay_leaves_refused_and_unroutable_rows_unsent(
    amqp_url: str, tmp_path: Path
) -> None:
    from orchestrator import migrations

    url = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    await asyncio.to_thread(migrations.upgrade, url)
    store = await SqlStore.connect(url)
    queue = await _full_queue(amqp_url)
    transport = AmqpTransport(amqp_url, name="test-guarantees")
    await transport.connect()
    now = datetime.now(UTC)
    try:
        messages = [
            OutboxMessage(message_id=f"m-{n}", exchange="", routing_key=target, body=b"{}")
            for n, target in enumerate([queue, queue, "no.such.queue"])
        ]
        async with store.transaction() as uow:
            ids = await uow.enqueue(messages, now)
        relay = OutboxRelay(store, transport, lambda: datetime.now(UTC))
        rows = await store.unsent(0)
        sent = 0
        for row in rows:  # one at a time: which of the two full-queue rows wins is then fixed
            sent += await relay.publish([row])
        assert sent == 1
        assert [row.id for row in await store.unsent(0)] == ids[1:]
        assert relay.unroutable == 1
    finally:
        await transport.close()
        await store.close()


async def test_a_delivery_held_by_a_cancelled_consumer_is_still_acked_once(
    amqp_url: str,
) -> None:
    """What a participant's widening relies on: a one-at-a-time consumer holds one
    delivery; a full consumer starts, the first is cancelled, and the delivery in hand is
    acked on its own channel afterwards. Every message arrives once, none is redelivered."""
    queue = f"guarantees.widen.{uuid.uuid4().hex[:8]}"
    setup = await aio_pika.connect(amqp_url)
    async with setup:
        channel = await setup.channel()
        await channel.declare_queue(
            queue, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5}
        )
    transport = AmqpTransport(amqp_url, name="test-guarantees")
    await transport.connect()
    held: list[Delivery] = []
    seen: list[tuple[str, bool]] = []
    all_in = asyncio.Event()

    async def hold(delivery: Delivery) -> None:
        seen.append((delivery.message_id or "", delivery.redelivered))
        held.append(delivery)

    async def take(delivery: Delivery) -> None:
        seen.append((delivery.message_id or "", delivery.redelivered))
        await delivery.ack()
        if len(seen) == 6:
            all_in.set()

    try:
        for index in range(6):
            await transport.publish(
                exchange="", routing_key=queue, body=b"{}", message_id=f"m-{index}"
            )
        cautious = await transport.consume(queue, hold, prefetch=1)
        await asyncio.sleep(0.5)
        assert [message_id for message_id, _ in seen] == ["m-0"], "prefetch 1 holds one"
        full = await transport.consume(queue, take, prefetch=20)
        await cautious.cancel()
        await held[0].ack()
        await asyncio.wait_for(all_in.wait(), 10)
        await full.cancel()
        assert sorted(message_id for message_id, _ in seen) == [f"m-{i}" for i in range(6)]
        assert not any(redelivered for _, redelivered in seen)
    finally:
        await transport.close()
    check = await aio_pika.connect(amqp_url)
    async with check:
        channel = await check.channel()
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.message_count == 0
        await channel.queue_delete(queue)
