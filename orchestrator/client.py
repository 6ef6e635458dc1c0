"""Starting sagas over the broker, as ``saga start`` does: publish start requests and wait
for the orchestrator's acceptance (its reply comes after the saga is recorded)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from contracts import MessageRejected, StartReply, StartRequest, decode, encode
from orchestrator.engine import new_id
from orchestrator.errors import SagaError
from orchestrator.topology import START_QUEUE
from orchestrator.transport import PublishFailed, publish_wire
from orchestrator.transports.amqp import AmqpTransport


class NoOrchestrator(SagaError):
    """No orchestrator answered in time; the start requests stay queued."""


class StartClient:
    """Publishes start requests and collects the orchestrator's replies."""

    def __init__(self, transport: AmqpTransport) -> None:
        self._transport = transport
        self._waiting: dict[str, asyncio.Future[StartReply]] = {}
        self._reply_to: str | None = None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        try:
            reply = decode(message.body, message.headers, expect=StartReply)
        except MessageRejected:
            return
        assert isinstance(reply, StartReply)
        future = self._waiting.get(reply.request_id)
        if future is not None and not future.done():
            future.set_result(reply)

    async def start_many(
        self,
        name: str,
        inputs: Sequence[tuple[dict[str, Any], str | None]],
        *,
        version: int | None = None,
        wait_seconds: float,
    ) -> list[StartReply]:
        """Start one saga per (input, key); replies in input order.

        Raises :class:`NoOrchestrator` if not every request was answered in ``wait_seconds``."""
        if self._reply_to is None:
            self._reply_to = await self._transport.temporary_queue(
                f"saga.client.{new_id()}", self._on_reply
            )
        requests = [
            StartRequest(
                message_id=new_id(),
                saga_name=name,
                saga_version=version,
                input=value,
                idempotency_key=key,
            )
            for value, key in inputs
        ]
        loop = asyncio.get_running_loop()
        futures = []
        for request in requests:
            future: asyncio.Future[StartReply] = loop.create_future()
            self._waiting[request.message_id] = future
            futures.append(future)
        await asyncio.gather(*(self._publish(request) for request in requests))
        try:
            async with asyncio.timeout(wait_seconds):
                return list(await asyncio.gather(*futures))
        except TimeoutError:
            answered = sum(1 for f in futures if f.done() and not f.cancelled())
            raise NoOrchestrator(
                f"no orchestrator answered within {wait_seconds:g}s "
                f"({answered} of {len(futures)} start requests accepted); "
                "the rest stay queued and will start when an orchestrator runs"
            ) from None
        finally:
            for request in requests:
                self._waiting.pop(request.message_id, None)

    async def _publish(self, request: StartRequest) -> None:
        wire = encode(request)
        sent = await publish_wire(
            self._transport, wire, routing_key=START_QUEUE, reply_to=self._reply_to
        )
        if not sent:
            raise PublishFailed(f"the broker did not confirm start request {wire.message_id}")
