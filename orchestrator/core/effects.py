"""What the state machine asks the world to do: the outputs of ``decide`` besides the new state.

Deadlines are part of the state (``StepState.deadline``): the store persists them
and the timer loop reads them back, so they are not effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.core.state import JSON, HistoryType, Kind


@dataclass(frozen=True)
class SendCommand:
    """Publish a step command (through the outbox, in the same transaction as the state)."""

    participant: str
    step: str
    kind: Kind
    command: str
    attempt: int
    payload: dict[str, JSON]
    idempotency_key: str
    action_key: str | None = None


@dataclass(frozen=True)
class Record:
    """Append an event to the saga's history."""

    type: HistoryType
    step: str | None = None
    attempt: int | None = None
    detail: dict[str, JSON] = field(default_factory=dict)


Effect = SendCommand | Record
"""Every effect ``decide`` can return."""
