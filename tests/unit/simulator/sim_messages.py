"""What travels through the simulated broker, what participants commit, and what both sides
need from the world they run in (:class:`Host`, implemented by ``Simulation``)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple, Protocol

from orchestrator.core.effects import SendCommand
from orchestrator.core.events import ReplyFailed, ReplySucceeded
from orchestrator.core.state import Kind

from .sim_faults import Faults, Stats

__all__ = ["CommandMessage", "EffectRecord", "Host", "Reply", "ReplyMessage"]

Reply = ReplySucceeded | ReplyFailed


class CommandMessage(NamedTuple):
    """A step command on a participant's queue; re-sent copies keep the message id."""

    message_id: str
    saga_id: str
    send: SendCommand


class ReplyMessage(NamedTuple):
    """A participant's reply on the orchestrator's queue; one id per command message, so a
    reply sent again after a crash is the same message."""

    message_id: str
    saga_id: str
    reply: Reply


class EffectRecord(NamedTuple):
    """A handler's committed effect: what must happen at most once per idempotency key."""

    key: str
    saga_id: str
    step: str
    kind: Kind
    at: int
    """Simulated microseconds since the start of the run."""


class Host(Protocol):
    """The world as the orchestrator and the participants see it."""

    rng: random.Random
    faults: Faults
    stats: Stats
    effects: list[EffectRecord]
    now: int
    """Simulated microseconds since the start of the run."""
    trace: list[str] | None
    """The event trace, kept only when asked for (``SAGA_SIM_VERBOSE=1``)."""

    @property
    def faulty(self) -> bool:
        """True during the fault phase: drops, lost confirms and crashes may happen."""
        ...

    def schedule(self, after: int, action: Callable[[], None]) -> None:
        """Run ``action`` ``after`` microseconds from now."""
        ...

    def between(self, low: int, high: int) -> int:
        """A whole number from ``low`` to ``high``, drawn from the run's generator."""
        ...

    def delay(self) -> int:
        """How long a message waits in its queue (microseconds)."""
        ...

    def deliver_command(self, message: CommandMessage, after: int) -> None:
        """Hand ``message`` to its participant ``after`` microseconds from now."""
        ...

    def deliver_reply(self, message: ReplyMessage, after: int) -> None:
        """Hand ``message`` to the orchestrator ``after`` microseconds from now."""
        ...

    def note(self, text: str) -> None:
        """Add a line to the trace (callers check ``trace is not None`` first)."""
        ...
