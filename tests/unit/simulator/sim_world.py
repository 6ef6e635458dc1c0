"""The simulated world of one seed: a fake clock, a broker, an orchestrator, participants.

One ``random.Random(seed)`` decides everything: the fault rates, the definitions, when
each saga starts, every delay, drop, duplicate and crash, and what every handler does.
Time is discrete (whole microseconds) and jumps from one scheduled event to the next.

The broker keeps what it confirmed: a message is lost only before its confirm, and the
publisher then sends it again. Deliveries wait a random time in their queue (so they
overtake each other), and may be handed over twice. The fault phase is followed by a
quiet phase without drops, lost confirms or crashes, which runs until nothing is left
to deliver or fire (or a bound is hit).
"""

from __future__ import annotations

import heapq
import random
import traceback
from collections.abc import Callable
from functools import partial

from orchestrator.core.machine import decide as core_decide

from .sim_definitions import PARTICIPANTS, random_definition
from .sim_faults import Stats, draw_faults
from .sim_messages import CommandMessage, EffectRecord, ReplyMessage
from .sim_orchestrator import Decide, Orchestrator, SagaSpec
from .sim_participants import Participant, ReplyIds, draw_moods

__all__ = ["HORIZON", "MAX_EVENTS", "Simulation"]

HORIZON = 6 * 3600 * 1_000_000
"""Simulated microseconds a run may last (a bound far beyond any legitimate wait)."""
MAX_EVENTS = 50_000
"""Events a run may take before it counts as not settling."""


class Simulation:
    """One seed's run; :meth:`run` it, then check it with ``sim_invariants.check``."""

    def __init__(
        self,
        seed: int,
        *,
        inbox: bool = True,
        decide: Decide = core_decide,
        durable: bool = True,
        reply_ids: ReplyIds = ReplyIds.PER_OUTCOME,
        verbose: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = rng = random.Random(seed)
        self.faults = draw_faults(rng)
        self.moods = draw_moods(rng)
        self.stats = Stats(runs=1)
        self.effects: list[EffectRecord] = []
        self.trace: list[str] | None = [] if verbose else None
        self.now = 0
        self.fault_end = int(self.faults.fault_seconds * 1_000_000)
        self.events = 0
        self.settled = False
        """True when the run ended because nothing was left to happen."""
        self.error: str | None = None
        """The traceback of an exception that ended the run (from the core, say)."""
        self._queue: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self.orchestrator = Orchestrator(self, decide, durable=durable)
        self.participants = {
            name: Participant(name, self, self.moods, inbox=inbox, reply_ids=reply_ids)
            for name in PARTICIPANTS
        }
        definitions = [random_definition(rng, f"sim_{n}") for n in range(rng.randint(1, 2))]
        self.sagas = [
            SagaSpec(f"saga-{n}", rng.choice(definitions), {"x": n}, rng.randint(0, 3_000_000))
            for n in range(rng.randint(1, 5))
        ]

    # -- the Host protocol --------------------------------------------------------------

    @property
    def faulty(self) -> bool:
        """True during the fault phase."""
        return self.now < self.fault_end

    def schedule(self, after: int, action: Callable[[], None]) -> None:
        """Run ``action`` ``after`` microseconds from now."""
        self._seq += 1
        heapq.heappush(self._queue, (self.now + after, self._seq, action))

    def between(self, low: int, high: int) -> int:
        """A whole number from ``low`` to ``high`` (``randint`` costs several times more)."""
        return low + int(self.rng.random() * (high - low + 1))

    def delay(self) -> int:
        """Mostly milliseconds; now and then seconds (past timeouts, out of order)."""
        if self.faults.long_delay and self.rng.random() < self.faults.long_delay:
            return self.between(500_000, 15_000_000)
        return self.between(1_000, 50_000)

    def deliver_command(self, message: CommandMessage, after: int) -> None:
        """The broker hands ``message`` to its participant later."""
        self.schedule(
            after, partial(self.participants[message.send.participant].on_command, message)
        )

    def deliver_reply(self, message: ReplyMessage, after: int) -> None:
        """The broker hands ``message`` to the orchestrator later."""
        self.schedule(after, partial(self.orchestrator.on_reply, message))

    def note(self, text: str) -> None:
        """Add a line to the trace."""
        if self.trace is not None:
            self.trace.append(f"{self.now / 1_000_000:12.6f}s {text}")

    # -- running ------------------------------------------------------------------------

    def run(self) -> Simulation:
        """Run to the end; an exception ends the run and is kept in :attr:`error`."""
        orchestrator = self.orchestrator
        if self.trace is not None:
            self.note(f"seed {self.seed}: {self.faults}")
            for spec in self.sagas:
                steps = ", ".join(
                    f"{s.name}@{s.participant}(timeout {s.timeout.total_seconds():g}s, "
                    f"{s.retry.max_attempts} attempts{', compensable' if s.compensation else ''})"
                    for s in spec.definition.steps
                )
                self.note(f"{spec.saga_id} starts at {spec.start_at / 1e6:g}s: {steps}")
        for spec in self.sagas:
            self.schedule(spec.start_at, partial(orchestrator.on_start, spec))
        for _ in range(self.rng.randint(0, self.faults.orchestrator_crashes)):
            self.schedule(self.rng.randint(0, self.fault_end), orchestrator.crash_at_random)
        queue = self._queue
        try:
            while queue:
                at, _, action = heapq.heappop(queue)
                if at > HORIZON or self.events >= MAX_EVENTS:
                    break
                self.now = at
                self.events += 1
                action()
            else:
                self.settled = True
        except Exception:
            self.error = traceback.format_exc()
        self.stats.sagas = len(self.sagas)
        self.stats.events = self.events
        self.stats.sim_seconds = self.now / 1_000_000
        return self
