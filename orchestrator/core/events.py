"""What can happen to a saga: the inputs of :func:`orchestrator.core.machine.decide`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.core.state import JSON, DeadlinePurpose, Kind
from orchestrator.definitions.model import SagaDefinition


@dataclass(frozen=True)
class ReplySucceeded:
    """A participant answered a command with success."""

    step: str
    kind: Kind
    attempt: int
    idempotency_key: str
    result: JSON = None


@dataclass(frozen=True)
class ReplyFailed:
    """A participant answered a command with a failure, retryable or not."""

    step: str
    kind: Kind
    attempt: int
    idempotency_key: str
    code: str
    message: str
    retryable: bool


@dataclass(frozen=True)
class TimerFired:
    """A step's durable deadline has passed (see :class:`orchestrator.core.state.Deadline`)."""

    step: str
    kind: Kind
    attempt: int
    purpose: DeadlinePurpose


@dataclass(frozen=True)
class OperatorRetry:
    """``saga retry``: send what failed for good again under a fresh idempotency key."""

    reason: str | None = None


@dataclass(frozen=True)
class OperatorAbort:
    """``saga abort``: compensate a running saga now; a step in flight counts as timed out."""

    reason: str | None = None


@dataclass(frozen=True)
class OperatorResolve:
    """``saga resolve``: a person cleaned up a failed saga by hand; mark it compensated."""

    reason: str | None = None


@dataclass(frozen=True)
class Migrate:
    """``saga migrate``: move the saga to another version of its definition."""

    definition: SagaDefinition
    renames: Mapping[str, str] = field(default_factory=dict)
    """Old step name -> new step name, for steps the new version renamed."""
    reason: str | None = None


@dataclass(frozen=True)
class DeadlinePassed:
    """The saga's own deadline (``deadline:`` in its definition) has passed."""


Event = (
    ReplySucceeded
    | ReplyFailed
    | TimerFired
    | OperatorRetry
    | OperatorAbort
    | OperatorResolve
    | DeadlinePassed
    | Migrate
)
"""Every event a started saga can receive (a start is :func:`~orchestrator.core.machine.start`)."""
