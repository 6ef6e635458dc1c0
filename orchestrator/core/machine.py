"""The saga state machine: ``decide(state, event, now) -> Decision``. Pure: no I/O, no async.

The rules are PRODUCT.md's "Semantics" and docs/definitions.md, in one place (the moves
themselves are in :mod:`.run`, :mod:`.replies` and :mod:`.operators`):

- Stages run in definition order: a step alone, or every step of a parallel group at
  once; the next stage starts when every step of this one succeeded or was skipped (its
  ``when:`` was false). After the last, the saga is ``completed`` with its output.
- A retryable failure or a timeout starts the next attempt after the backoff (a
  ``retry`` deadline), under the same idempotency key, while the step's retry policy
  allows (``max_attempts``, unbounded for a retriable step; ``retry.on``/``never``).
  Otherwise the step has failed for good: the saga compensates; or, past a succeeded
  pivot or on a step with ``on_failure: fail``, stops ``failed`` for an operator.
- Compensating undoes, one at a time, newest first by the order steps finished, every
  step that took effect or may have (its last attempt timed out or failed retryably, an
  abort or the deadline caught it in flight, or its success arrived after it failed for
  good) and has a compensation; not while a step of a parallel group is still in flight.
  Compensations are retried until they succeed; one that fails for good leaves the saga
  ``failed``.
- A reply is accepted only for what the saga is waiting on: a success from any attempt
  under the current key, a failure only from the attempt in flight. Everything else is
  recorded as ``reply_ignored`` and changes nothing else. A timer is acted on only if it
  is the step's current deadline (or the saga's); a stale one is a no-op.
- A late success for a step that failed for good without being compensated starts its
  compensation, even after the saga ended ``compensated``; for the step a saga stopped
  on (going forward), it resumes the saga.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from orchestrator.core.events import (
    DeadlinePassed,
    Event,
    Migrate,
    OperatorAbort,
    OperatorRetry,
    ReplyFailed,
    ReplySucceeded,
    TimerFired,
)
from orchestrator.core.operators import OperatorMoves
from orchestrator.core.run import DEFINITION_ERRORS, Decision
from orchestrator.core.state import (
    JSON,
    HistoryType,
    SagaState,
)
from orchestrator.definitions.model import SagaDefinition

__all__ = ["DEFINITION_ERRORS", "Decision", "decide", "start"]


def start(saga_id: str, definition: SagaDefinition, input: JSON, now: datetime) -> Decision:
    """A new saga: record it and send its first step."""
    state = SagaState.new(saga_id, definition, input)
    if definition.deadline is not None:
        state = replace(state, deadline=now + definition.deadline)
    run = OperatorMoves(state, now)
    run.record(HistoryType.STARTED, detail={"name": definition.name, "version": definition.version})
    run.begin_step(0)
    return run.decision()


def decide(state: SagaState, event: Event, now: datetime) -> Decision:
    """Apply one event to a saga (see the module docstring for the rules)."""
    run = OperatorMoves(state, now)
    if isinstance(event, ReplySucceeded):
        run.on_success(event)
    elif isinstance(event, ReplyFailed):
        run.on_failure(event)
    elif isinstance(event, TimerFired):
        run.on_timer(event)
    elif isinstance(event, OperatorRetry):
        run.on_operator_retry(event)
    elif isinstance(event, OperatorAbort):
        run.on_operator_abort(event)
    elif isinstance(event, DeadlinePassed):
        run.on_deadline(event)
    elif isinstance(event, Migrate):
        run.on_migrate(event)
    else:
        run.on_operator_resolve(event)
    return run.decision()
