"""Dead-lettered messages: list them, show one, replay them (``saga dlq``).

Every work queue dead-letters into ``<queue>.dlq`` (:mod:`orchestrator.topology`) in one of
two ways: a consumer that cannot use a message publishes a copy with our headers
(``x-dead-letter-reason``, ``x-original-queue``, ``x-dead-lettered-at``) and acks the
original, or the broker moves the message itself (a reject, or past the queue's delivery
limit) and adds its ``x-death`` header. Both kinds read the same way here.

Reading never removes anything: a DLQ is read with ``basic.get`` on a channel of its own
without acking, and closing that channel hands every message back to the broker. Replay
publishes a copy to the original queue with publisher confirms and only then acks the DLQ's
delivery, so a crash in between leaves a duplicate, which the consumer's inbox answers by
its idempotency key, never a loss.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, DeliveryMode
from pamqp.common import FieldValue

from orchestrator.dead_letters import (
    MAX_READ,
    ORIGINAL_USER_HEADER,
    PUBLISH_TIMEOUT,
    DeadLetter,
    DeadLetterRow,
    Replayed,
    replay_headers,
)
from orchestrator.transport import TransportUnavailable

__all__ = ["DeadLetterQueues"]


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_LOST = (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS)


@asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    try:
        yield
    except _LOST as exc:
        raise TransportUnavailable(f"lost the connection to RabbitMQ while {what}: {exc}") from exc


class DeadLetterQueues:
    """The DLQs on one broker connection: read without consuming, and replay.

    Use as ``async with await DeadLetterQueues.connect(url) as dlqs: ...``.
    """

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        self._publisher: AbstractChannel | None = None
        self.truncated: list[str] = []
        """DLQs holding more than :data:`MAX_READ` messages, of which only that many were read."""

    @classmethod
    async def connect(cls, url: str) -> DeadLetterQueues:
        """Connect; TransportUnavailable (one sentence) when the broker cannot be reached."""
        try:
            connection = await aio_pika.connect(
                url, timeout=10, client_properties={"connection_name": "saga-dlq"}
            )
        except (*_LOST, aiormq.exceptions.AMQPError, ValueError) as exc:
            raise TransportUnavailable(
                f"cannot connect to RabbitMQ at {_masked(url)}: {exc}"
            ) from None
        return cls(connection)

    async def close(self) -> None:
        """Close the connection; the broker takes back anything still unacked."""
        if not self._connection.is_closed:
            await self._connection.close()

    async def __aenter__(self) -> DeadLetterQueues:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def exists(self, dlq: str) -> bool:
        """Whether the broker has a queue named ``dlq`` (a passive declare: nothing is read)."""
        async with _translated(f"looking for {dlq}"):
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                await channel.declare_queue(dlq, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return False  # and the broker closed the channel
            finally:
                if not channel.is_closed:
                    await channel.close()
        return True

    async def depths(self, dlqs: Sequence[str]) -> dict[str, int]:
        """How many messages each existing DLQ holds (passive declares: nothing is read)."""
        found: dict[str, int] = {}
        async with _translated("counting dead letters"):
            for dlq in dlqs:
                channel = await self._connection.channel(publisher_confirms=False)
                try:
                    queue = await channel.declare_queue(dlq, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    continue
                finally:
                    if not channel.is_closed:
                        await channel.close()
                found[dlq] = queue.declaration_result.message_count or 0
        return found

    async def listing(self, dlqs: Sequence[str]) -> list[DeadLetterRow]:
        """Every message in ``dlqs`` (missing ones are empty), in queue order; nothing moves."""
        rows: list[DeadLetterRow] = []

        def note(letter: DeadLetter) -> bool:
            rows.append(letter.row())
            return False

        async with _translated("listing dead letters"):
            for dlq in dlqs:
                async with self._held(dlq, note):
                    pass
        return rows

    async def find(self, dlqs: Sequence[str], message_id: str) -> DeadLetter | None:
        """The first message with ``message_id`` in ``dlqs``, or None; nothing moves."""
        async with _translated(f"looking for {message_id}"):
            for dlq in dlqs:
                async with self._held(dlq, lambda letter: letter.message_id == message_id) as kept:
                    if kept:
                        return kept[0][0]
        return None

    async def replay(
        self, dlqs: Sequence[str], ids: Collection[str] | None, *, dry_run: bool = False
    ) -> list[Replayed]:
        """Send the messages with these ``ids`` (every one when None) in ``dlqs`` back to their
        queues, each acked in its DLQ only once the broker confirmed the copy; ids found in
        none of them come last, as not found. ``dry_run`` only says what it would do."""
        results: list[Replayed] = []
        found: set[str] = set()

        def chosen(letter: DeadLetter) -> bool:
            return ids is None or letter.message_id in ids

        async with _translated("replaying dead letters"):
            for dlq in dlqs:
                # Everything is read before anything is sent: a replay that dies again comes
                # back into this DLQ and must not be read (and replayed) a second time here.
                async with self._held(dlq, chosen) as kept:
                    for letter, delivery in kept or []:
                        found.add(letter.message_id or "")
                        results.append(await self._replay(letter, delivery, dry_run))
        for missing in sorted(set(ids or ()) - found):
            problem = f"no dead-lettered message with id {missing}"
            results.append(Replayed(missing, None, replayed=False, problem=problem))
        return results

    async def _replay(
        self, letter: DeadLetter, delivery: AbstractIncomingMessage, dry_run: bool
    ) -> Replayed:
        queue = letter.queue
        if queue != letter.home:
            problem = f"its headers name the queue {queue!r}, but it sits in {letter.dlq!r}"
            return Replayed(letter.message_id, queue, replayed=False, problem=problem)
        if dry_run:
            return Replayed(letter.message_id, queue, replayed=False)
        headers = replay_headers(letter.headers)
        if letter.user_id:
            headers[ORIGINAL_USER_HEADER] = letter.user_id
        message = aio_pika.Message(
            letter.body,
            headers={key: cast(FieldValue, value) for key, value in headers.items()},
            content_type=letter.content_type,
            content_encoding=letter.content_encoding,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=letter.message_id,
            correlation_id=letter.correlation_id,
            reply_to=letter.reply_to,
            type=letter.type,
            timestamp=letter.timestamp,
            app_id=letter.app_id,
        )
        if self._publisher is None:
            self._publisher = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        try:
            # The default exchange reaches every queue by its name, participants' included.
            await self._publisher.default_exchange.publish(
                message, routing_key=queue, mandatory=True, timeout=PUBLISH_TIMEOUT
            )
        except aio_pika.exceptions.PublishError:
            problem = f"there is no queue {queue!r} to send it to"
            return Replayed(letter.message_id, queue, replayed=False, problem=problem)
        except aio_pika.exceptions.DeliveryError as exc:
            problem = f"the broker refused the copy for {queue!r}: {exc}"
            return Replayed(letter.message_id, queue, replayed=False, problem=problem)
        # Only now, with the copy confirmed: a crash before this ack leaves a duplicate.
        await delivery.ack()
        return Replayed(letter.message_id, queue, replayed=True)

    @asynccontextmanager
    async def _held(
        self, dlq: str, keep: Callable[[DeadLetter], bool]
    ) -> AsyncIterator[list[tuple[DeadLetter, AbstractIncomingMessage]] | None]:
        """Read all of ``dlq`` (up to MAX_READ) without acking, offering each letter to
        ``keep``; yield the kept ones with their deliveries (None when there is no such
        queue). On exit the channel closes and the broker takes back whatever was not acked.

        Safe to repeat: a DLQ is a quorum queue without a delivery limit, so being handed
        back only raises the messages' ``x-delivery-count``. (A broker policy that puts a
        delivery limit on the DLQs too would break this: keep policies off ``*.dlq``.)
        """
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            try:
                # Passive: listing declares nothing. A missing queue closes the channel.
                queue = await channel.declare_queue(dlq, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                queue = None
            if queue is None:
                yield None
                return
            kept: list[tuple[DeadLetter, AbstractIncomingMessage]] = []
            read = 0
            while read < MAX_READ:
                delivery = await queue.get(no_ack=False, fail=False)
                if delivery is None:
                    break
                read += 1
                letter = DeadLetter.from_message(dlq, delivery)
                if keep(letter):
                    kept.append((letter, delivery))
            else:
                self.truncated.append(dlq)
            yield kept
        finally:
            if not channel.is_closed:
                await channel.close()
