"""The message transport port: what the orchestrator and participants need from a broker.

The aio-pika implementation is :mod:`orchestrator.transports.amqp`. Its guarantees are
the ones RELIABILITY.md asks for: a publish returns only once the broker confirmed it
(persistent, mandatory: an unroutable message is an error, never a silent loss), and a
delivery is acknowledged only when the handler says so, after its durable write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from contracts import WireMessage
from orchestrator.errors import SagaError
from orchestrator.topology import Topology

log = logging.getLogger(__name__)


class TransportError(SagaError):
    """Root of the transport's errors; aio-pika/aiormq exceptions are translated into these."""


class PublishFailed(TransportError):
    """The broker did not confirm a publish; its outcome is unknown or negative: send it again."""


class Unroutable(PublishFailed):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class TransportUnavailable(TransportError):
    """The broker cannot be reached right now."""


class Delivery(Protocol):
    """One message handed to a consumer; settle it exactly once."""

    @property
    def body(self) -> bytes:
        """The raw body (not parsed: the byte cap is checked before parsing)."""
        ...

    @property
    def headers(self) -> Mapping[str, object]:
        """AMQP headers (values may be bytes)."""
        ...

    @property
    def message_id(self) -> str | None:
        """The ``message_id`` property."""
        ...

    @property
    def reply_to(self) -> str | None:
        """The ``reply_to`` property."""
        ...

    @property
    def user_id(self) -> str | None:
        """The broker-validated ``user_id`` property, if the sender set one."""
        ...

    @property
    def redelivered(self) -> bool:
        """True if the broker delivered this message before."""
        ...

    @property
    def queue(self) -> str:
        """The queue it came from."""
        ...

    async def ack(self) -> None:
        """Done with it: call only after the durable write. A stale delivery (its channel
        was lost) is ignored: the broker has requeued it and the inbox will see it again."""
        ...

    async def requeue(self) -> None:
        """Give it back for another try (counts against the queue's delivery limit)."""
        ...

    async def dead_letter(self, reason: str) -> None:
        """Move it to the queue's DLQ with ``reason`` for the operator, never to be retried
        on its own (``saga dlq replay`` brings it back)."""
        ...


Handler = Callable[[Delivery], Awaitable[None]]
"""A consumer callback; it must settle the delivery (ack, requeue or dead-letter)."""


class Subscription(Protocol):
    """A running consumer."""

    async def cancel(self) -> None:
        """Stop receiving new deliveries (those in hand may still be settled)."""
        ...


class Transport(Protocol):
    """Publishing with confirms and consuming with manual acks."""

    async def declare(self, topology: Topology) -> None:
        """Declare exchanges, queues and bindings (idempotent)."""
        ...

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
        """Publish a persistent message and wait for the broker's confirm.

        Raises :class:`Unroutable` if a mandatory message was returned,
        :class:`PublishFailed` if it was nacked or the link dropped before the confirm.
        """
        ...

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        """Start consuming ``queue``; deliveries are handled concurrently, up to ``prefetch``."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...


async def publish_wire(
    transport: Transport,
    wire: WireMessage,
    *,
    routing_key: str,
    exchange: str = "",
    reply_to: str | None = None,
    attempts: int = 8,
) -> bool:
    """Publish an encoded message, sending it again while the link drops before the confirm.

    Every copy has the same message id, so a copy that did arrive is dropped by the
    receiver. False when it is still unconfirmed after ``attempts`` tries."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            await transport.publish(
                exchange=exchange,
                routing_key=routing_key,
                body=wire.body,
                message_id=wire.message_id,
                headers=wire.headers,
                content_type=wire.content_type,
                correlation_id=wire.correlation_id,
                reply_to=reply_to,
                type=wire.type,
            )
            return True
        except PublishFailed as exc:
            log.warning(
                "%s %s not confirmed (%s); try %d of %d", wire.type, wire.message_id, exc,
                attempt, attempts,
            )  # fmt: skip
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
    return False
