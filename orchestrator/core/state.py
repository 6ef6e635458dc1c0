"""The state of one saga as the pure core sees it: plain frozen dataclasses, no I/O.

The store maps these to rows and back; the state machine (:mod:`orchestrator.core.machine`)
maps a state and an event to a new state and effects.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from orchestrator.definitions.model import SagaDefinition, StepDefinition

JSON = Any
"""A JSON value (dict, list, str, int, float, bool or None)."""


class SagaStatus(StrEnum):
    """Where a saga stands; ``completed``, ``compensated`` and ``failed`` are terminal."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True when nothing more happens without an operator (or a late reply)."""
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class StepStatus(StrEnum):
    """Where one step stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    SKIPPED = "skipped"
    """Its ``when:`` was false: it never ran and is never compensated."""


class CompensationStatus(StrEnum):
    """Where a step's compensation stands, once it was started."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Kind(StrEnum):
    """Whether a command does a step's work or undoes it."""

    ACTION = "action"
    COMPENSATION = "compensation"


class DeadlinePurpose(StrEnum):
    """What happens when a deadline passes."""

    REPLY = "reply"
    """No reply came for the attempt in flight: it has timed out."""
    RETRY = "retry"
    """The backoff after a failed attempt is over: send the next attempt."""


class HistoryType(StrEnum):
    """The types of events in a saga's history (PRODUCT.md)."""

    STARTED = "started"
    STEP_SENT = "step_sent"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_TIMED_OUT = "step_timed_out"
    STEP_SKIPPED = "step_skipped"
    COMPENSATION_SENT = "compensation_sent"
    COMPENSATION_SUCCEEDED = "compensation_succeeded"
    COMPENSATION_FAILED = "compensation_failed"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"
    REPLY_IGNORED = "reply_ignored"
    OPERATOR_RETRY = "operator_retry"
    OPERATOR_ABORT = "operator_abort"
    OPERATOR_RESOLVE = "operator_resolve"
    DEADLINE_PASSED = "deadline_passed"
    MIGRATED = "migrated"


@dataclass(frozen=True)
class ErrorInfo:
    """Why a step, a compensation or a saga failed."""

    code: str
    message: str
    retryable: bool = False
    step: str | None = None

    def to_json(self) -> dict[str, JSON]:
        """The error as stored and shown (``saga status --json``)."""
        out: dict[str, JSON] = {"code": self.code, "message": self.message}
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Deadline:
    """A durable timer on a step: when it passes, the timer loop feeds ``TimerFired``."""

    at: datetime
    kind: Kind
    purpose: DeadlinePurpose


@dataclass(frozen=True)
class CompensationState:
    """A step's compensation once it has been started."""

    status: CompensationStatus
    attempts: int = 0
    result: JSON = None
    error: ErrorInfo | None = None
    generation: int = 0
    """Bumped by an operator retry, which sends the compensation under a fresh key."""


@dataclass(frozen=True)
class StepState:
    """One step's progress."""

    name: str
    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    result: JSON = None
    error: ErrorInfo | None = None
    effect_possible: bool = False
    """The action may have taken effect although it did not succeed (it timed out,
    was abandoned by an abort, or a success arrived after it failed for good);
    such a step is compensated too."""
    generation: int = 0
    """Bumped by an operator retry, which sends the action under a fresh key."""
    deadline: Deadline | None = None
    compensation: CompensationState | None = None
    key_name: str | None = None
    """The name its idempotency keys carry, when a migration renamed a step that had
    already run (its keys must not change); None: its name."""
    finished: int | None = None
    """Its place in the order steps finished (succeeded, or failed for good), 1 for the
    first: compensation goes newest first. None for a step that has not finished."""


def idempotency_key(saga_id: str, step: str, kind: Kind, generation: int = 0) -> str:
    """``<saga id>:<step>:<action|compensation>``, plus ``:r<n>`` after the n-th operator retry."""
    key = f"{saga_id}:{step}:{kind.value}"
    return key if generation == 0 else f"{key}:r{generation}"


@dataclass(frozen=True)
class SagaState:
    """Everything the state machine needs to decide the next move of one saga."""

    saga_id: str
    definition: SagaDefinition
    status: SagaStatus
    input: JSON
    steps: tuple[StepState, ...]
    output: JSON = None
    error: ErrorInfo | None = None
    deadline: datetime | None = None
    """The whole saga's deadline (``deadline:`` in the definition), while it runs."""

    @classmethod
    def new(cls, saga_id: str, definition: SagaDefinition, input: JSON) -> SagaState:
        """A saga that was accepted and has not sent anything yet."""
        return cls(
            saga_id=saga_id,
            definition=definition,
            status=SagaStatus.RUNNING,
            input=input,
            steps=tuple(StepState(name=step.name) for step in definition.steps),
        )

    def step(self, name: str) -> tuple[int, StepState] | None:
        """The index and state of the step called ``name``, or None."""
        for index, step in enumerate(self.steps):
            if step.name == name:
                return index, step
        return None

    def step_definition(self, index: int) -> StepDefinition:
        """The definition of the step at ``index``."""
        return self.definition.steps[index]

    def with_step(self, index: int, step: StepState) -> SagaState:
        """A copy with the step at ``index`` replaced."""
        steps = list(self.steps)
        steps[index] = step
        return replace(self, steps=tuple(steps))

    def action_key(self, index: int) -> str:
        """The idempotency key the step's action runs (or ran) under."""
        step = self.steps[index]
        name = step.key_name or step.name
        return idempotency_key(self.saga_id, name, Kind.ACTION, step.generation)

    def compensation_key(self, index: int) -> str:
        """The idempotency key of the step's compensation."""
        step = self.steps[index]
        generation = step.compensation.generation if step.compensation else 0
        name = step.key_name or step.name
        return idempotency_key(self.saga_id, name, Kind.COMPENSATION, generation)

    def waiting_on(self) -> StepState | None:
        """The step whose reply or timer the saga waits for, if any."""
        for step in self.steps:
            if step.status in (StepStatus.RUNNING, StepStatus.COMPENSATING) and (
                step.deadline is not None
            ):
                return step
        return None
