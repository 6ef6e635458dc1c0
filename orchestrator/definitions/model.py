"""The validated form of a saga definition.

A definition as loaded from YAML is normalised here: step ``timeout`` and ``retry``
are always filled in (the step's own values merged field by field over the
definition's ``defaults``), so the engine never looks at ``defaults`` again.
The model also serialises to JSON and back, which is how a running saga keeps
a snapshot of the definition version it started on.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestrator.definitions.durations import Duration

JSONValue = Any
"""A value that came from JSON or YAML: dict, list, str, int, float, bool or None."""

MAX_STEPS = 100
"""No definition may have more steps than this (a guard against runaway definitions)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Backoff(_Frozen):
    """Delay before attempt n+1: ``initial * multiplier**(n-1)``, capped at ``max``."""

    initial: Duration = timedelta(milliseconds=500)
    multiplier: float = Field(default=2.0, ge=1.0, le=100.0)
    max: Duration = timedelta(seconds=30)

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt ``attempt`` (1 for the first) before the next one."""
        exponent = max(attempt - 1, 0)
        seconds = self.initial.total_seconds() * (self.multiplier**exponent)
        return min(timedelta(seconds=seconds), self.max)


TIMEOUT_CODE = "timeout"
"""The failure code of an attempt that got no reply in time (for ``retry.on``/``never``)."""

FailureCode = Annotated[str, Field(min_length=1, max_length=200)]
"""A failure code as a participant sends it (``out_of_stock``)."""


class RetryPolicy(_Frozen):
    """How often an action is attempted in all, how long to wait between attempts, and
    which failure codes are worth another attempt."""

    max_attempts: int = Field(default=3, ge=1, le=1000)
    backoff: Backoff = Backoff()
    on: tuple[FailureCode, ...] | None = None
    """When set, only a retryable failure with one of these codes (or ``timeout``) is
    retried; any other fails the step for good."""
    never: tuple[FailureCode, ...] = ()
    """Failure codes never retried, even when the participant says they are retryable."""

    def retries(self, code: str) -> bool:
        """Whether a retryable failure (or a timeout) with ``code`` may be attempted again."""
        if code in self.never:
            return False
        return self.on is None or code in self.on


class StepKind(StrEnum):
    """Where a step stands relative to the saga's point of no return."""

    COMPENSATABLE = "compensatable"
    """Can be undone (by its compensation, or has nothing to undo); its failure for good
    compensates the steps before it."""
    PIVOT = "pivot"
    """The point of no return: once it succeeds the saga only goes forward."""
    RETRIABLE = "retriable"
    """Retried until it succeeds (``max_attempts`` does not apply); has no compensation."""


class OnFailure(StrEnum):
    """What a step's failure for good does to the saga."""

    COMPENSATE = "compensate"
    """Compensate what completed (unless the saga is past its pivot)."""
    FAIL = "fail"
    """Stop as ``failed`` and let an operator decide: ``saga retry`` or ``saga abort``."""


class CompensationDefinition(_Frozen):
    """The command that undoes a step; runs on the same participant as the step."""

    command: str = Field(min_length=1)
    payload: dict[str, JSONValue] = Field(default_factory=dict)


class StepDefinition(_Frozen):
    """One step: a command sent to a participant, and how to undo it."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    participant: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    command: str = Field(min_length=1)
    payload: dict[str, JSONValue] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=30)
    retry: RetryPolicy = RetryPolicy()
    compensation: CompensationDefinition | None = None
    kind: StepKind | None = None
    """None only while validating: filled in from the compensation (see ``_infer_kind``)."""
    when: str | None = Field(default=None, min_length=1)
    """A condition (:mod:`orchestrator.definitions.conditions`); false: the step is skipped."""
    on_failure: OnFailure = OnFailure.COMPENSATE
    group: int | None = Field(default=None, ge=1)
    """The parallel group the step runs in (numbered from 1 in definition order), or None
    for a step that runs alone."""

    @model_validator(mode="after")
    def _infer_kind(self) -> StepDefinition:
        # A step with a compensation is compensatable, the rest retriable (a snapshot
        # stored before kinds existed reads the same way).
        if self.kind is None:
            inferred = StepKind.COMPENSATABLE if self.compensation else StepKind.RETRIABLE
            object.__setattr__(self, "kind", inferred)
        return self

    @property
    def step_kind(self) -> StepKind:
        """The step's kind (always set once validated)."""
        assert self.kind is not None
        return self.kind

    def retries_forever(self) -> bool:
        """A retriable step is attempted until it succeeds."""
        return self.kind is StepKind.RETRIABLE


class SagaDefinition(_Frozen):
    """A whole saga definition, with defaults already applied to every step."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1)
    description: str | None = None
    input_schema: dict[str, JSONValue] | None = None
    steps: tuple[StepDefinition, ...] = Field(min_length=1, max_length=MAX_STEPS)
    output: dict[str, JSONValue] | None = None
    deadline: Duration | None = None
    """How long the whole saga may run: then it compensates (or, past its pivot, stops
    ``failed`` for an operator)."""

    def stage(self, index: int) -> range:
        """The steps that start together with the step at ``index``: its parallel group,
        or the step alone."""
        group = self.steps[index].group
        if group is None:
            return range(index, index + 1)
        first, last = index, index
        while first > 0 and self.steps[first - 1].group == group:
            first -= 1
        while last + 1 < len(self.steps) and self.steps[last + 1].group == group:
            last += 1
        return range(first, last + 1)

    @property
    def pivot(self) -> int | None:
        """The index of the pivot step, if the saga has one."""
        for index, step in enumerate(self.steps):
            if step.kind is StepKind.PIVOT:
                return index
        return None

    def step_index(self, name: str) -> int:
        """The position of the step called ``name``; KeyError if there is none."""
        for index, step in enumerate(self.steps):
            if step.name == name:
                return index
        raise KeyError(name)

    @property
    def key(self) -> tuple[str, int]:
        """The registry key: (name, version)."""
        return (self.name, self.version)
