"""What a run may go through, drawn once per seed, and counters of what it actually went through.

Swarm testing: each seed draws its own fault rates (some runs never drop a message, some
drop a third of them), so rare combinations come up far more often than with one fixed mix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

__all__ = ["Faults", "Stats", "draw_faults"]


@dataclass(frozen=True)
class Faults:
    """Fault rates of one run; they hold during the fault phase only (see ``faulty``)."""

    drop: float
    """A publish (command or reply) is lost before the broker confirms it."""
    lost_confirm: float
    """The message reached its queue but the confirm never reached the publisher."""
    duplicate: float
    """A delivery is handed over again later (its ack was lost with the channel)."""
    long_delay: float
    """A message waits seconds in its queue: past timeouts, and out of order."""
    participant_crash: float
    """A participant dies while handling a delivery (before or after its commit)."""
    orchestrator_crashes: int
    """At most this many orchestrator crashes in the run."""
    crash_point: float
    """The chance that a named crash point fires while crashes are left."""
    fault_seconds: float
    """How long the fault phase lasts; a quiet phase (no drops, no crashes) follows."""


def draw_faults(rng: random.Random) -> Faults:
    """The fault rates of one run."""
    return Faults(
        drop=rng.choice((0.0, 0.05, 0.15, 0.3)),
        lost_confirm=rng.choice((0.0, 0.0, 0.05, 0.15)),
        duplicate=rng.choice((0.0, 0.05, 0.2)),
        long_delay=rng.choice((0.0, 0.05, 0.2)),
        participant_crash=rng.choice((0.0, 0.05, 0.15)),
        orchestrator_crashes=rng.choice((0, 1, 2, 3, 5)),
        crash_point=rng.choice((0.02, 0.1, 0.3)),
        fault_seconds=rng.choice((5.0, 20.0, 60.0)),
    )


@dataclass
class Stats:
    """What a run injected and what absorbed it; summed over seeds for the report."""

    runs: int = 0
    sagas: int = 0
    events: int = 0
    decisions: int = 0
    drops: int = 0
    """Publishes lost before their confirm (commands and replies)."""
    lost_confirms: int = 0
    duplicates: int = 0
    """Deliveries handed over again by the broker."""
    republished: int = 0
    """Outbox rows published again after a drop, a lost confirm or a crash."""
    orchestrator_crashes: int = 0
    participant_crashes: int = 0
    timers_fired: int = 0
    handler_runs: int = 0
    inbox_answers: int = 0
    """Commands a participant answered from its inbox without running the handler again."""
    cancelled_actions: int = 0
    """Actions a compensation reached before they ran."""
    replies_deduplicated: int = 0
    """Replies (and start requests) the orchestrator dropped by their message id."""
    conflicting_replies: int = 0
    """Of those, replies that said something else than the reply first seen under that id."""
    sim_seconds: float = 0.0

    def add(self, other: Stats) -> None:
        """Add another run's counters to these."""
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def summary(self) -> str:
        """One line for the report."""
        return ", ".join(
            f"{field.name}={getattr(self, field.name):g}"
            if isinstance(getattr(self, field.name), float)
            else f"{field.name}={getattr(self, field.name)}"
            for field in fields(self)
        )
