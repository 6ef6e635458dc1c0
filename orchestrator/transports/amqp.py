"""The transport on RabbitMQ with aio-pika (see :mod:`orchestrator.transport` for the contract).

Two robust connections: one publishes, one consumes, because a broker resource alarm
blocks publishing connections and must not stop consumers from draining. Publishing
uses a confirm channel with ``mandatory`` and returns raised. Consumers use manual
acks, a bounded prefetch, and treat an ack that fails because its channel was lost
as normal: the broker has already requeued the message (RELIABILITY.md section 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
)
from pamqp.common import FieldValue

from orchestrator.topology import DEAD_LETTER_EXCHANGE, Topology, dead_letter_queue
from orchestrator.transport import (
    Handler,
    PublishFailed,
    Subscription,
    TransportUnavailable,
    Unroutable,
)

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT = 10
"""Seconds; two missed beats and the link is declared dead (TCP alone takes minutes)."""
RECONNECT_INTERVAL = 1.0
"""Seconds between attempts to reconnect after the broker dropped the connection."""
PUBLISH_TIMEOUT = 30.0
"""Seconds to wait for a confirm before the outcome counts as unknown."""

REASON_HEADER = "x-dead-letter-reason"
ORIGINAL_QUEUE_HEADER = "x-original-queue"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"

_CHANNEL_GONE = (
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    aiormq.exceptions.ChannelClosed,
    RuntimeError,  # aio-pika: "channel closed" on a message from a lost channel
)


def _field_table(headers: Mapping[str, object] | None) -> dict[str, FieldValue]:
    return {key: cast(FieldValue, value) for key, value in (headers or {}).items()}


class AmqpDelivery:
    """A :class:`~orchestrator.transport.Delivery` over an aio-pika incoming message."""

    def __init__(self, message: AbstractIncomingMessage, queue: str, transport: AmqpTransport):
        self._message = message
        self._queue = queue
        self._transport = transport
        self._settled = False

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def headers(self) -> Mapping[str, object]:
        return cast(Mapping[str, object], self._message.headers or {})

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    @property
    def reply_to(self) -> str | None:
        return self._message.reply_to

    @property
    def user_id(self) -> str | None:
        return self._message.user_id

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def queue(self) -> str:
        return self._queue

    async def ack(self) -> None:
        await self._settle(self._message.ack())

    async def requeue(self) -> None:
        await self._settle(self._message.nack(requeue=True))

    async def dead_letter(self, reason: str) -> None:
        """Publish a copy with the reason to the DLQ (confirmed), then ack the original.

        If the copy cannot be published, reject without requeue instead: the queue's
        own at-least-once dead-lettering moves it (without our reason header)."""
        message = self._message
        headers = dict(self.headers)
        headers[REASON_HEADER] = reason[:1000]
        headers[ORIGINAL_QUEUE_HEADER] = self._queue
        headers[DEAD_LETTERED_AT_HEADER] = datetime.now(UTC).isoformat()
        try:
            await self._transport.publish(
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=dead_letter_queue(self._queue),
                body=message.body,
                message_id=message.message_id or "",
                headers=headers,
                content_type=message.content_type or "application/octet-stream",
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                type=message.type,
            )
        except PublishFailed:
            log.warning("could not publish a dead letter copy; rejecting instead", exc_info=True)
            await self._settle(message.reject(requeue=False))
            return
        await self._settle(message.ack())

    async def _settle(self, action: Any) -> None:
        if self._settled:
            action.close()
            return
        self._settled = True
        try:
            await action
        except _CHANNEL_GONE:
            # The channel this delivery came on is gone; the broker requeued the
            # message and will deliver it again. The inbox makes that harmless.
            log.info("delivery from a lost channel not settled; it will be redelivered")


class _AmqpSubscription:
    def __init__(self, queue: AbstractQueue, tag: str) -> None:
        self._queue = queue
        self._tag = tag

    async def cancel(self) -> None:
        with contextlib.suppress(*_CHANNEL_GONE):
            await self._queue.cancel(self._tag)


class AmqpTransport:
    """A :class:`~orchestrator.transport.Transport` on RabbitMQ."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        heartbeat: int = DEFAULT_HEARTBEAT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._url = url
        self._name = name
        self._heartbeat = heartbeat
        self._ssl_context = ssl_context
        self._publish_connection: AbstractRobustConnection | None = None
        self._consume_connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        # Consumer channels and queues are kept here: aio-pika restores robust
        # objects through weak references, so dropping them loses them on reconnect.
        self._consumers: list[tuple[AbstractChannel, AbstractQueue]] = []
        self._publish_lock = asyncio.Lock()

    async def connect(self) -> None:
        """Open both connections (robust: they reconnect and restore consumers)."""
        try:
            self._publish_connection = await self._open(f"{self._name}:publish")
            self._consume_connection = await self._open(f"{self._name}:consume")
            self._publish_channel = self._publish_connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            await self._publish_channel.initialize()
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            await self.close()
            raise TransportUnavailable(f"cannot connect to RabbitMQ: {exc}") from exc

    async def _open(self, name: str) -> AbstractRobustConnection:
        kwargs: dict[str, Any] = {
            "heartbeat": self._heartbeat,
            # aio-pika waits 5 s between reconnect attempts by default; a broker restart
            # should cost about a second, not five.
            "reconnect_interval": RECONNECT_INTERVAL,
            "client_properties": {"connection_name": name},
            "timeout": 10,
        }
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        connection: AbstractRobustConnection = await aio_pika.connect_robust(self._url, **kwargs)
        return connection

    def _channel(self) -> AbstractChannel:
        if self._publish_channel is None:
            raise TransportUnavailable("the transport is not connected")
        return self._publish_channel

    async def declare(self, topology: Topology) -> None:
        channel = self._channel()
        try:
            for name in topology.exchanges:
                self._exchanges[name] = await channel.declare_exchange(
                    name, aio_pika.ExchangeType.DIRECT, durable=True
                )
            for spec in topology.queues:
                queue = await channel.declare_queue(
                    spec.name, durable=True, arguments=dict(spec.arguments)
                )
                if spec.exchange is not None:
                    await queue.bind(spec.exchange, routing_key=spec.routing_key or spec.name)
        except (TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise TransportUnavailable(f"cannot declare the topology: {exc}") from exc

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self._channel().default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel().get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, object] | None = None,
        content_type: str = "application/json",
        correlation_id: str | None = None,
        reply_to: str | None = None,
        type: str | None = None,
        mandatory: bool = True,
    ) -> None:
        message = aio_pika.Message(
            body,
            headers=_field_table(headers),
            content_type=content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            type=type,
            timestamp=datetime.now(UTC),
        )
        try:
            target = await self._exchange(exchange)
            await target.publish(
                message, routing_key=routing_key, mandatory=mandatory, timeout=PUBLISH_TIMEOUT
            )
        except aio_pika.exceptions.PublishError as exc:
            raise Unroutable(
                f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}"
            ) from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise PublishFailed(f"the broker refused message {message_id}: {exc}") from exc
        except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
            raise PublishFailed(f"publish of {message_id} not confirmed: {exc!r}") from exc

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        if self._consume_connection is None:
            raise TransportUnavailable("the transport is not connected")
        try:
            channel = self._consume_connection.channel(publisher_confirms=False)
            await channel.initialize()
            await channel.set_qos(prefetch_count=prefetch)
            declared = await channel.get_queue(queue, ensure=True)
        except (TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise TransportUnavailable(f"cannot consume queue {queue!r}: {exc}") from exc

        async def on_message(message: AbstractIncomingMessage) -> None:
            delivery = AmqpDelivery(message, queue, self)
            try:
                await handler(delivery)
            except Exception:
                # A handler must settle its delivery; one that raises leaves it to the
                # delivery limit: requeue, and the broker dead-letters it past the limit.
                log.exception("handler for queue %s raised; requeueing the delivery", queue)
                await delivery.requeue()

        tag = await declared.consume(on_message, no_ack=False)
        self._consumers.append((channel, declared))
        return _AmqpSubscription(declared, tag)

    async def temporary_queue(
        self, name: str, handler: Callable[[AbstractIncomingMessage], Awaitable[None]]
    ) -> str:
        """A queue for answers to this process; deliveries are auto-acked.

        Not exclusive: an exclusive queue dies with its connection, and answers sent while
        the client reconnects would be lost. The broker deletes it once it has been unused
        for a minute (``x-expires``)."""
        if self._consume_connection is None:
            raise TransportUnavailable("the transport is not connected")
        channel = self._consume_connection.channel(publisher_confirms=False)
        await channel.initialize()
        queue = await channel.declare_queue(
            name, durable=False, auto_delete=False, arguments={"x-expires": 60_000}
        )
        await queue.consume(handler, no_ack=True)
        self._consumers.append((channel, queue))
        return queue.name

    async def consumer_channels_ready(self) -> None:
        """Wait until every consumer channel is open again (after a reconnect)."""
        for channel, _queue in self._consumers:
            await channel.ready()  # type: ignore[attr-defined]

    async def close(self) -> None:
        for connection in (self._consume_connection, self._publish_connection):
            if connection is not None and not connection.is_closed:
                try:
                    await connection.close()
                except Exception:  # closing is best effort
                    log.debug("error while closing a connection", exc_info=True)
        self._consume_connection = None
        self._publish_connection = None
        self._publish_channel = None
        self._consumers.clear()
        self._exchanges.clear()


__all__ = ["AmqpDelivery", "AmqpTransport"]
