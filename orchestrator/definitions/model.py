"""The validated form of a saga definition.

A definition as loaded from YAML is normalised here: step ``timeout`` and ``retry``
are always filled in (the step's own values merged field by field over the
definition's ``defaults``), so the engine never looks at ``defaults`` again.
The model also serialises to JSON and back, which is how a running saga keeps
a snapshot of the definition version it started on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class RetryPolicy(_Frozen):
    """How often an action is attempted in all, and how long to wait between attempts."""

    max_attempts: int = Field(default=3, ge=1, le=1000)
    backoff: Backoff = Backoff()


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


class SagaDefinition(_Frozen):
    """A whole saga definition, with defaults already applied to every step."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    version: int = Field(ge=1)
    description: str | None = None
    input_schema: dict[str, JSONValue] | None = None
    steps: tuple[StepDefinition, ...] = Field(min_length=1, max_length=MAX_STEPS)
    output: dict[str, JSONValue] | None = None

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
