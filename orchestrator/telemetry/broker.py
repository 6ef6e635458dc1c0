"""The ``saga.dlq.depth`` gauge: how many messages wait in each dead-letter queue.

Reading a depth costs a passive declare per queue, so a background task reads them every
``interval`` seconds on its own connection and the gauge reports the last reading; the
gauge is only set up when metrics are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Observation

from orchestrator.dlq import DeadLetterQueues
from orchestrator.errors import SagaError
from orchestrator.telemetry.setup import Telemetry

log = logging.getLogger(__name__)


class DlqDepthGauge:
    """Polls DLQ depths for the ``saga.dlq.depth`` gauge (see the module docstring)."""

    def __init__(
        self, telemetry: Telemetry, amqp_url: str, dlqs: Sequence[str], interval: float = 15.0
    ) -> None:
        self._url = amqp_url
        self._dlqs = list(dlqs)
        self._interval = interval
        self._depths: dict[str, int] = {}
        self._stopped = asyncio.Event()
        telemetry.meter.create_observable_gauge(
            "saga.dlq.depth",
            callbacks=[self._observe],
            unit="{message}",
            description="Messages waiting in each dead-letter queue (read every few seconds)",
        )

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(depth, {"queue": dlq}) for dlq, depth in self._depths.items()]

    async def run(self) -> None:
        """Read the depths until :meth:`stop`; a broker outage only skips readings."""
        dlqs: DeadLetterQueues | None = None
        try:
            while not self._stopped.is_set():
                try:
                    if dlqs is None:
                        dlqs = await DeadLetterQueues.connect(self._url)
                    self._depths = await dlqs.depths(self._dlqs)
                except SagaError as exc:
                    log.debug("could not read DLQ depths: %s", exc)
                    if dlqs is not None:
                        await dlqs.close()
                        dlqs = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self._interval)
        finally:
            if dlqs is not None:
                await dlqs.close()

    def stop(self) -> None:
        """Make :meth:`run` return."""
        self._stopped.set()
