"""The transport on RabbitMQ with aio-pika (see :mod:`orchestrator.transport` for the contract).

Two robust connections: one publishes, one consumes, because a broker resource alarm
blocks publishing connections and must not stop consumers from draining. Publishing
uses a confirm channel with ``mandatory`` and returns raised. Consumers use manual
acks, a bounded prefetch, and treat an ack that fails because its channel was lost
as normal: the broker has already requeued the message (RELIABILITY.md section 1).

Security (docs/security.md): an ``amqps://`` URL connects with a verifying TLS context
(:mod:`orchestrator.tls`); every message published carries the connection's user in
``user_id``, which the broker validates, so a receiver knows who sent it; and declaring
tolerates a least-privilege user that may not configure: what it is refused to declare
must already exist (made by the deployer), and is checked passively instead.
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
from yarl import URL

from orchestrator.tls import TlsSettings, client_context, masked_url, url_user
from orchestrator.topology import DEAD_LETTER_EXCHANGE, QueueSpec, Topology, dead_letter_queue
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
ORIGINAL_USER_HEADER = "x-original-user-id"
"""The validated sender of a dead-lettered message: its copy cannot keep ``user_id`` (the
broker checks that against the publisher of the copy). The replay tool writes the same."""

_CHANNEL_GONE = (
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    aiormq.exceptions.ChannelClosed,
    RuntimeError,  # aio-pika: "channel closed" on a message from a lost channel
)


def _field_table(headers: Mapping[str, object] | None) -> dict[str, FieldValue]:
    return {key: cast(FieldValue, value) for key, value in (headers or {}).items()}


def _persistent_message(
    body: bytes,
    *,
    message_id: str,
    headers: Mapping[str, object] | None,
    content_type: str,
    correlation_id: str | None,
    reply_to: str | None,
    type: str | None,
    user_id: str | None,
) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=_field_table(headers),
        content_type=content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        reply_to=reply_to,
        type=type,
        timestamp=datetime.now(UTC),
        user_id=user_id,
    )


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
        if message.user_id:
            headers[ORIGINAL_USER_HEADER] = message.user_id
        copy = _persistent_message(
            message.body,
            message_id=message.message_id or "",
            headers=headers,
            content_type=message.content_type or "application/octet-stream",
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            type=message.type,
            user_id=None,
        )
        try:
            await self._transport._deliver(
                copy, DEAD_LETTER_EXCHANGE, dead_letter_queue(self._queue), True
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
    """A :class:`~orchestrator.transport.Transport` on RabbitMQ.

    ``ssl_context`` overrides the verifying context built from an ``amqps://`` URL.
    ``stamp_user_id=False`` leaves ``user_id`` unset, for a login whose user name is not
    the one in the URL (the EXTERNAL mechanism, where the certificate names the user)."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        heartbeat: int = DEFAULT_HEARTBEAT,
        ssl_context: ssl.SSLContext | None = None,
        stamp_user_id: bool = True,
    ) -> None:
        self._url = url
        self._name = name
        self._heartbeat = heartbeat
        self._ssl_context = ssl_context
        self._user_id = url_user(url) if stamp_user_id else None
        self._publish_connection: AbstractRobustConnection | None = None
        self._consume_connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        # Consumer channels and queues are kept here: aio-pika restores robust
        # objects through weak references, so dropping them loses them on reconnect.
        self._consumers: list[tuple[AbstractChannel, AbstractQueue]] = []
        self._publish_lock = asyncio.Lock()

    async def connect(self) -> None:
        """Open both connections (robust: they reconnect and restore consumers).

        :class:`~orchestrator.tls.TlsError` for unusable TLS settings and
        :class:`TransportUnavailable` for a broker that cannot be reached or refuses us,
        each a sentence with the URL's password masked."""
        if self._ssl_context is None:
            self._ssl_context = client_context(self._url)
        try:
            self._publish_connection = await self._open(f"{self._name}:publish")
            self._consume_connection = await self._open(f"{self._name}:consume")
            self._publish_channel = self._publish_connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            await self._publish_channel.initialize()
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            await self.close()
            raise TransportUnavailable(
                f"cannot connect to RabbitMQ at {masked_url(self._url)}: {_why(exc, self._url)}"
            ) from exc

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
        """Declare the topology on a channel of its own (a refusal closes the channel).

        What this user may not configure must exist already and is checked passively; a
        binding it may not make is left to the deployer (a missing one shows up as an
        unroutable publish, never as a silent loss)."""
        if self._publish_connection is None:
            raise TransportUnavailable("the transport is not connected")
        declarer = _Declarer(self._publish_connection, url_user(self._url))
        try:
            for name in topology.exchanges:
                await declarer.exchange(name)
            for spec in topology.queues:
                await declarer.queue(spec)
        except (TimeoutError, aiormq.exceptions.AMQPError) as exc:
            raise TransportUnavailable(f"cannot declare the topology: {exc}") from exc
        finally:
            await declarer.close()

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
        message = _persistent_message(
            body,
            message_id=message_id,
            headers=headers,
            content_type=content_type,
            correlation_id=correlation_id,
            reply_to=reply_to,
            type=type,
            user_id=self._user_id,
        )
        await self._deliver(message, exchange, routing_key, mandatory)

    async def _deliver(
        self, message: aio_pika.Message, exchange: str, routing_key: str, mandatory: bool
    ) -> None:
        """Publish and wait for the confirm, translating aio-pika's errors."""
        message_id = message.message_id
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


class _Declarer:
    """Declares on a channel of its own, reopened after each refusal (the broker closes a
    channel on ACCESS_REFUSED), falling back to passive checks where it may not configure."""

    def __init__(self, connection: AbstractRobustConnection, user: str) -> None:
        self._connection = connection
        self._user = user
        self._open: aio_pika.Channel | None = None

    async def _channel(self) -> aio_pika.Channel:
        if self._open is None:
            # A plain channel: a robust one would reopen itself after every refusal and
            # re-declare on each reconnect what this user may not declare.
            self._open = aio_pika.Channel(self._connection, publisher_confirms=False)
            await self._open.initialize()
        return self._open

    async def exchange(self, name: str) -> None:
        channel = await self._channel()
        try:
            await channel.declare_exchange(name, aio_pika.ExchangeType.DIRECT, durable=True)
        except aiormq.exceptions.ChannelAccessRefused:
            await self.close()
            await self._existing_exchange(name)

    async def queue(self, spec: QueueSpec) -> None:
        channel = await self._channel()
        try:
            queue = await channel.declare_queue(
                spec.name, durable=True, arguments=dict(spec.arguments)
            )
        except aiormq.exceptions.ChannelAccessRefused:
            await self.close()
            queue = await self._existing_queue(spec.name)
        if spec.exchange is None:
            return
        try:
            await queue.bind(spec.exchange, routing_key=spec.routing_key or spec.name)
        except aiormq.exceptions.ChannelAccessRefused:
            await self.close()
            log.info(
                "user %r may not bind %s to %s; the deployment is trusted to have bound it",
                self._user,
                spec.name,
                spec.exchange,
            )

    async def _existing_exchange(self, name: str) -> None:
        channel = await self._channel()
        try:
            await channel.declare_exchange(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            await self.close()
            raise self._missing("exchange", name) from None

    async def _existing_queue(self, name: str) -> AbstractQueue:
        channel = await self._channel()
        try:
            return await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            await self.close()
            raise self._missing("queue", name) from None

    def _missing(self, kind: str, name: str) -> TransportUnavailable:
        return TransportUnavailable(
            f"the {kind} {name!r} does not exist, and RabbitMQ user {self._user!r} may not "
            "declare it; declare the topology as the deployer first "
            "(deploy/rabbitmq-least-privilege.sh)"
        )

    async def close(self) -> None:
        """Close the channel (one the broker closed already is only forgotten)."""
        channel, self._open = self._open, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*_CHANNEL_GONE):
                await channel.close()


def _vhost(url: str) -> str:
    path = URL(url).path
    return path[1:] if len(path) > 1 else "/"


def _why(exc: BaseException, url: str) -> str:
    """Why a connection failed, as the end of a sentence (TLS and login failures spelled
    out, since the driver's words for them are cryptic)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the broker's certificate was not accepted ({cause.verify_message}); "
                "SAGA_AMQP_CA_FILE must name the CA that signed it, and the URL's host "
                "must be a name the certificate is for"
            )
        if isinstance(cause, ssl.SSLError):
            if "CERTIFICATE_REQUIRED" in str(cause) or "alert" in str(cause):
                return (
                    f"the TLS handshake failed ({cause.reason}); a broker that asks for a "
                    "client certificate needs SAGA_AMQP_CERT_FILE and SAGA_AMQP_KEY_FILE "
                    "with one it trusts"
                )
            return f"the TLS handshake failed ({cause.reason or cause})"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError) or "ACCESS_REFUSED" in text:
        return f"the broker refused the login ({text})"
    if "OpenOk" in text and "Connection.Close" in text:
        return (
            f"the broker refused to open vhost {_vhost(url)!r} for user {url_user(url)!r}: "
            "the vhost does not exist or the user has no permissions on it"
        )
    without_certificate = TlsSettings.from_url(url).cert_file is None
    if "unexpectedly closed" in text and URL(url).scheme == "amqps" and without_certificate:
        # Under TLS 1.3 a server that wants a client certificate checks it after the
        # handshake, so its refusal only shows as the connection closing.
        return (
            f"the broker closed the connection ({text}); if it requires a client "
            "certificate, set SAGA_AMQP_CERT_FILE and SAGA_AMQP_KEY_FILE"
        )
    return text


__all__ = ["AmqpDelivery", "AmqpTransport"]
