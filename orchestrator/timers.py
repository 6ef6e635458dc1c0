"""The timer loop: acts on step deadlines (reply timeouts and retry backoffs) that have passed.

Deadlines live in the database with the step they belong to, so they survive any
restart. The loop claims due ones in batches (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several orchestrators share the work without doing it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from orchestrator.engine import TIMER_BATCH, Engine
from orchestrator.store import StoreError

log = logging.getLogger(__name__)


class TimerLoop:
    """Polls for due deadlines every ``interval`` seconds (at once again after a full batch)."""

    def __init__(self, engine: Engine, *, interval: float = 0.2, batch: int = TIMER_BATCH) -> None:
        self._engine = engine
        self._interval = interval
        self._batch = batch
        self._stopped = asyncio.Event()
        self.fired = 0

    async def run(self) -> None:
        """Run until :meth:`stop`."""
        while not self._stopped.is_set():
            claimed = 0
            try:
                claimed = await self._engine.fire_due(self._batch)
                self.fired += claimed
            except StoreError:
                log.warning("timer pass failed; retrying", exc_info=True)
            if claimed >= self._batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval)

    def stop(self) -> None:
        """Make :meth:`run` return after its current pass."""
        self._stopped.set()
