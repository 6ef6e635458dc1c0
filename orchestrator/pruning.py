"""The pruning loop: deletes dedupe records once they are too old to matter.

The orchestrator's inbox (processed message ids) and its sent outbox rows, and a
participant's inbox, grow by a few rows per message. Kept for a retention period (long
past any redelivery or retry of the same message), they are deleted by this loop in
short batches, so the tables stay as large as the retention period's traffic, however
long the process runs. Several processes may prune the same tables: deletes are
idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from orchestrator.store import StoreError

log = logging.getLogger(__name__)

PRUNE_BATCH = 5000
"""Rows of each kind one pass deletes in one transaction."""


class PruneLoop:
    """Every ``interval`` seconds, ``prune(cutoff, limit)`` until a pass deletes fewer than
    ``limit`` rows; ``cutoff`` is now minus ``retention``."""

    def __init__(
        self,
        prune: Callable[[datetime, int], Awaitable[int]],
        *,
        retention: timedelta,
        clock: Callable[[], datetime],
        what: str,
        interval: float = 60.0,
        batch: int = PRUNE_BATCH,
    ) -> None:
        self._prune = prune
        self._retention = retention
        self._clock = clock
        self._what = what
        self._interval = interval
        self._batch = batch
        self._stopped = asyncio.Event()
        self.deleted = 0

    async def prune_once(self) -> int:
        """One pass: every row past the retention period, in batches; how many."""
        cutoff = self._clock() - self._retention
        total = 0
        while not self._stopped.is_set():
            deleted = await self._prune(cutoff, self._batch)
            total += deleted
            if deleted < self._batch:
                break
        self.deleted += total
        if total:
            log.info("pruned %d %s older than %s", total, self._what, self._retention)
        return total

    async def run(self) -> None:
        """Prune every ``interval`` (the first time one interval after the start, which is
        busy enough) until :meth:`stop`."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval)
            if self._stopped.is_set():
                return
            try:
                await self.prune_once()
            except (StoreError, OSError) as exc:
                log.warning("could not prune %s (%s); trying again later", self._what, exc)

    def stop(self) -> None:
        """Make :meth:`run` return after its current pass."""
        self._stopped.set()
