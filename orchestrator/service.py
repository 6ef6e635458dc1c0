"""The orchestrator service: consumers for start requests and replies, the outbox relay and
the timer loop, wired around one :class:`~orchestrator.engine.Engine`.

Every delivery is decoded after a byte cap; what cannot be decoded is dead-lettered with
its reason (never requeued forever). A decoded message is acknowledged only after the
engine's transaction committed. While the database is unreachable the message in hand
waits and is retried, rather than being requeued (which would count against the
queue's delivery limit and dead-letter good messages during an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from contracts import MessageRejected, StartRequest, StepReply, decode
from orchestrator import crashpoints
from orchestrator.core.state import SagaState
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.engine import Engine, utc_now
from orchestrator.logs import saga_log_context
from orchestrator.outbox import OutboxRelay
from orchestrator.pruning import PruneLoop
from orchestrator.settings import Settings
from orchestrator.store import StaleVersion, Store, StoreUnavailable
from orchestrator.telemetry.broker import DlqDepthGauge
from orchestrator.telemetry.identity import trace_id_of
from orchestrator.telemetry.sagas import SagaTelemetry
from orchestrator.telemetry.setup import Telemetry
from orchestrator.timers import TimerLoop
from orchestrator.topology import DLQ_SUFFIX, REPLY_QUEUE, START_QUEUE, orchestrator_topology
from orchestrator.transport import Delivery, Subscription, Transport

log = logging.getLogger(__name__)


class OrchestratorService:
    """One orchestrator process (several may run against one PostgreSQL database)."""

    def __init__(
        self,
        settings: Settings,
        registry: DefinitionRegistry,
        store: Store,
        transport: Transport,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        self.transport = transport
        self.telemetry = telemetry or Telemetry.off()
        saga_telemetry = SagaTelemetry(self.telemetry)
        self.relay = OutboxRelay(store, transport, utc_now, telemetry=saga_telemetry)
        self.engine = Engine(store, registry, on_commit=self.relay.submit, telemetry=saga_telemetry)
        self._dlq_gauge: DlqDepthGauge | None = None
        self.timers = TimerLoop(self.engine)
        self.pruner = PruneLoop(
            lambda cutoff, limit: store.prune(
                processed_before=cutoff, sent_before=cutoff, limit=limit
            ),
            retention=settings.dedupe_retention,
            clock=utc_now,
            what="handled message ids and sent outbox rows",
        )
        self._subscriptions: list[Subscription] = []
        self._background: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Check the schema, declare the topology, start the loops, then consume."""
        if self.settings.reply_senders is not None:
            self.settings.reply_senders.require(self.registry.participants())
        await self.store.check_schema()
        for warning in await self.store.maintenance_warnings():
            log.warning("%s", warning)
        topology = orchestrator_topology(self.registry.participants())
        await self.transport.declare(topology)
        self._background = [
            asyncio.create_task(self.relay.run(), name="outbox-relay"),
            asyncio.create_task(self.timers.run(), name="timers"),
            asyncio.create_task(self.pruner.run(), name="pruner"),
        ]
        if self.telemetry.measuring:
            dlqs = [queue.name for queue in topology.queues if queue.name.endswith(DLQ_SUFFIX)]
            self._dlq_gauge = DlqDepthGauge(self.telemetry, self.settings.amqp_url, dlqs)
            self._background.append(asyncio.create_task(self._dlq_gauge.run(), name="dlq-depth"))
        prefetch = self.settings.prefetch
        self._subscriptions = [
            await self.transport.consume(START_QUEUE, self._on_start, prefetch=prefetch),
            await self.transport.consume(REPLY_QUEUE, self._on_reply, prefetch=prefetch),
        ]
        log.info(
            "orchestrator running: %d saga definitions, consuming %s and %s",
            len(list(self.registry)),
            START_QUEUE,
            REPLY_QUEUE,
        )

    async def stop(self) -> None:
        """Stop consuming, finish the messages in hand, flush the outbox, close."""
        self._stopping.set()
        for subscription in self._subscriptions:
            await subscription.cancel()
        await self._idle.wait()
        self.timers.stop()
        self.pruner.stop()
        self.relay.stop()
        if self._dlq_gauge is not None:
            self._dlq_gauge.stop()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.relay.flush()
        await self.transport.close()
        await self.store.close()
        # Flushing waits for the exporter (bounded by its timeout): off the event loop.
        await asyncio.to_thread(self.telemetry.shutdown)
        log.info("orchestrator stopped")

    # -- consumers --------------------------------------------------------------

    async def _on_start(self, delivery: Delivery) -> None:
        async def apply() -> None:
            request = decode(delivery.body, delivery.headers, expect=StartRequest, max_bytes=cap)
            await self._with_store_retry(
                lambda: self.engine.start(request, reply_to=delivery.reply_to)
            )

        cap = self.settings.max_message_bytes
        await self._handle(delivery, apply)

    async def _on_reply(self, delivery: Delivery) -> None:
        async def apply() -> None:
            reply = decode(delivery.body, delivery.headers, expect=StepReply, max_bytes=cap)
            trace_id = trace_id_of(reply.trace)
            with saga_log_context(reply.saga_id, step=reply.step, trace_id=trace_id):
                check: Callable[[SagaState], None] | None = None
                if (senders := self.settings.reply_senders) is not None:
                    # Checked against the saga the engine reads anyway (no read of its own).
                    def check(state: SagaState) -> None:
                        senders.check(state, reply.step, delivery.user_id)

                await self._with_store_retry(lambda: self.engine.on_reply(reply, check=check))

        cap = self.settings.max_message_bytes
        await self._handle(delivery, apply)

    async def _handle(self, delivery: Delivery, apply: Callable[[], Awaitable[None]]) -> None:
        """Decode and apply one delivery, then ack; dead-letter what cannot be decoded."""
        self._in_flight += 1
        self._idle.clear()
        try:
            try:
                await apply()
            except MessageRejected as exc:
                log.warning("dead-lettering a message from %s: %s", delivery.queue, exc)
                await delivery.dead_letter(str(exc))
                return
            # Unacked, the delivery holds a prefetch slot: a backlog of publishes stops
            # consumption here rather than growing in memory.
            await self.relay.room()
            if delivery.queue == REPLY_QUEUE:
                crashpoints.crash("orchestrator.after_commit_before_ack")
            await delivery.ack()
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _with_store_retry(self, action: Callable[[], Awaitable[object]]) -> None:
        delay = 0.1
        while True:
            try:
                await action()
                return
            except StaleVersion:
                continue  # another transaction moved the saga first: decide again on the new state
            except StoreUnavailable as exc:
                log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
