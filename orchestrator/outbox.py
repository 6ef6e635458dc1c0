"""The outbox relay: publishes committed outbox rows and marks them sent once confirmed.

Rows are published right after the transaction that wrote them commits (``submit``),
so the hot path has no polling delay. A periodic sweep publishes whatever is left
(a crash between commit and confirm, a broker outage), oldest first. A row is marked
sent only after the broker confirmed it, so a crash at any point means "publish
again", never "lost"; receivers dedupe by message id and idempotency key.

Rows being published are bounded (``max_publishing``): a consumer awaits :meth:`room`
before it acks, so when the broker or the event loop falls behind, deliveries stay
unacked (the prefetch stops the broker sending more) instead of piling up as publishes
in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from orchestrator import crashpoints
from orchestrator.store import OutboxMessage, Store, StoreError
from orchestrator.telemetry.sagas import SagaTelemetry
from orchestrator.transport import PublishFailed, Transport, Unroutable

log = logging.getLogger(__name__)

START_REPLY_TYPE = "saga.start_reply"
"""A starter's reply queue is exclusive to it: if it is gone, so is the starter."""


class OutboxRelay:
    """Publishes outbox rows (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        clock: Callable[[], datetime],
        *,
        sweep_interval: float = 1.0,
        sweep_grace: timedelta = timedelta(seconds=5),
        batch: int = 500,
        mark_gather: float = 0.02,
        max_publishing: int = 1000,
        telemetry: SagaTelemetry | None = None,
    ) -> None:
        self._store = store
        self._transport = transport
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._sweep_grace = sweep_grace
        self._batch = batch
        self._mark_gather = mark_gather
        """Seconds a marking waits for more confirms to join it (fewer, larger updates;
        no saga waits for it)."""
        self._telemetry = telemetry
        self._max_publishing = max_publishing
        self._publishing = 0
        """Rows submitted and not yet confirmed and marked (or given up for the sweep)."""
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: set[int] = set()
        """Rows this relay is publishing right now: a sweep must not publish them again."""
        self._started_at = clock()
        self._to_mark: list[tuple[list[int], asyncio.Future[bool]]] = []
        self._marking = False
        self._stopped = asyncio.Event()
        self.published = 0
        self.unroutable = 0

    def submit(self, messages: Sequence[OutboxMessage]) -> None:
        """Publish freshly committed rows now, in the background."""
        if not messages:
            return
        self._in_flight.update(m.id for m in messages if m.id is not None)
        self._publishing += len(messages)
        if self._publishing >= self._max_publishing:
            self._room.clear()
        task = asyncio.get_running_loop().create_task(self._publish_batch(list(messages)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_batch(self, messages: list[OutboxMessage]) -> None:
        try:
            await self.publish(messages)
        finally:
            self._publishing -= len(messages)
            if self._publishing < self._max_publishing:
                self._room.set()

    async def room(self) -> None:
        """Wait until fewer than ``max_publishing`` submitted rows are still being published."""
        await self._room.wait()

    async def publish(self, messages: Sequence[OutboxMessage]) -> int:
        """Publish rows concurrently; mark the confirmed ones sent. Returns how many were."""
        ids = {m.id for m in messages if m.id is not None}
        self._in_flight.update(ids)
        try:
            return await self._publish(messages)
        finally:
            self._in_flight.difference_update(ids)

    async def _publish(self, messages: Sequence[OutboxMessage]) -> int:
        results = await asyncio.gather(*(self._publish_one(m) for m in messages))
        confirmed = [m for m, ok in zip(messages, results, strict=True) if ok and m.id is not None]
        sent = [m.id for m in confirmed if m.id is not None]
        if sent:
            crashpoints.crash("orchestrator.after_confirm_before_mark_sent")
            now = self._clock()
            if self._telemetry is not None:
                self._telemetry.outbox_sent(confirmed, now)
            if not await self._mark_sent(sent):
                return 0
        self.published += len(sent)
        return len(sent)

    async def _mark_sent(self, ids: list[int]) -> bool:
        """Mark rows sent, together with those other publishes confirmed meanwhile: one
        update for all of them (while one runs, or for ``mark_gather``, the next gathers). True once
        they are marked; False if the database refused (the sweep will send them again, a
        duplicate that receivers drop, once it is back)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._to_mark.append((ids, done))
        if not self._marking:
            self._marking = True
            task = asyncio.get_running_loop().create_task(self._mark_batches())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await done

    async def _mark_batches(self) -> None:
        try:
            while self._to_mark:
                if self._mark_gather > 0 and not self._stopped.is_set():
                    await asyncio.sleep(self._mark_gather)
                batch, self._to_mark = self._to_mark, []
                ids = [row_id for row_ids, _ in batch for row_id in row_ids]
                try:
                    await self._store.mark_sent(ids, self._clock())
                    marked = True
                except StoreError:
                    log.warning("could not mark %d outbox rows sent", len(ids), exc_info=True)
                    marked = False
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    raise
                for _, done in batch:
                    if not done.done():
                        done.set_result(marked)
        finally:
            self._marking = False

    async def _publish_one(self, message: OutboxMessage) -> bool:
        try:
            crashpoints.crash_soon("orchestrator.during_publish")
            await self._transport.publish(
                exchange=message.exchange,
                routing_key=message.routing_key,
                body=message.body,
                message_id=message.message_id,
                headers=message.headers,
                content_type=message.content_type,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                type=message.type,
            )
        except Unroutable as exc:
            if message.type == START_REPLY_TYPE:
                log.info("starter of %s is gone; its reply is dropped", message.saga_id)
                return True
            self.unroutable += 1
            log.error(
                "outbox message %s is unroutable and stays unsent: %s", message.message_id, exc
            )
            return False
        except PublishFailed as exc:
            log.warning("outbox message %s not confirmed, will retry: %s", message.message_id, exc)
            return False
        return True

    async def sweep(self, *, first: bool = False) -> int:
        """Publish unsent rows that nobody is publishing: on the first sweep, every row
        written before this relay started (a crash left them); later, rows older than the
        grace period that this relay is not publishing right now."""
        total = 0
        while True:
            older_than = self._started_at if first else self._clock() - self._sweep_grace
            rows = await self._store.unsent(self._batch, older_than=older_than)
            rows = [row for row in rows if row.id not in self._in_flight]
            if not rows:
                return total
            sent = await self.publish(rows)
            total += sent
            if sent < len(rows):
                return total  # the broker is not taking them now; try on the next sweep

    async def run(self) -> None:
        """Sweep what a crash left behind, then periodically until :meth:`stop`."""
        first = True
        while not self._stopped.is_set():
            try:
                await self.sweep(first=first)
                first = False
            except StoreError:
                log.warning("outbox sweep failed; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._sweep_interval)

    async def flush(self) -> None:
        """Wait for the publishes in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def stop(self) -> None:
        """Make :meth:`run` return after its current sweep."""
        self._stopped.set()
