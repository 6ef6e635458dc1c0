"""The saga state machine: ``decide(state, event, now) -> Decision``. Pure: no I/O, no async.

The rules are PRODUCT.md's "Semantics", in one place:

- Steps run one at a time, in definition order. A success moves to the next step;
  after the last one the saga is ``completed`` with its output mapping rendered.
- A retryable failure or a timeout starts the next attempt after the backoff (a
  ``retry`` deadline), under the same idempotency key. When attempts run out, or on
  a permanent failure, the step has failed for good and the saga is ``compensating``.
- Compensating undoes, one at a time, in reverse order, every step that took effect
  or may have (its last attempt timed out, an abort caught it in flight, or its
  success arrived after it failed for good) and has a compensation. Compensations
  are retried until they succeed; one that fails for good leaves the saga ``failed``.
- A reply is accepted only for what the saga is waiting on: a success from any
  attempt under the current key (they are answers to the same idempotent command),
  a failure only from the attempt in flight. Everything else (duplicates, late or
  unknown replies) is recorded as ``reply_ignored`` and changes nothing else. A
  timer is acted on only if it is the step's current deadline; a stale one is a no-op.
- A late success for a step that failed for good without being compensated starts
  its compensation, even after the saga ended ``compensated``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from orchestrator.core.effects import Effect, Record, SendCommand
from orchestrator.core.events import (
    Event,
    OperatorAbort,
    OperatorResolve,
    OperatorRetry,
    ReplyFailed,
    ReplySucceeded,
    TimerFired,
)
from orchestrator.core.state import (
    JSON,
    CompensationState,
    CompensationStatus,
    Deadline,
    DeadlinePurpose,
    ErrorInfo,
    HistoryType,
    Kind,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from orchestrator.definitions.errors import MissingReference
from orchestrator.definitions.model import SagaDefinition
from orchestrator.definitions.references import ReferenceContext
from orchestrator.definitions.rendering import (
    render_compensation_payload,
    render_output,
    render_step_payload,
)

__all__ = ["Decision", "decide", "start"]


@dataclass(frozen=True)
class Decision:
    """The outcome of one event: the new state, what to do, and whether anything moved."""

    state: SagaState
    effects: tuple[Effect, ...] = ()
    changed: bool = True
    """False when the event was ignored (the state is the old one; effects may still
    hold a ``reply_ignored`` record)."""
    refusal: str | None = None
    """For an operator action the state does not allow: why, as a sentence."""


def start(saga_id: str, definition: SagaDefinition, input: JSON, now: datetime) -> Decision:
    """A new saga: record it and send its first step."""
    run = _Run(SagaState.new(saga_id, definition, input), now)
    run.record(HistoryType.STARTED, detail={"name": definition.name, "version": definition.version})
    run.begin_step(0)
    return run.decision()


def decide(state: SagaState, event: Event, now: datetime) -> Decision:
    """Apply one event to a saga (see the module docstring for the rules)."""
    run = _Run(state, now)
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
    else:
        run.on_operator_resolve(event)
    return run.decision()


class _Run:
    """One application of an event: accumulates the new state and effects."""

    def __init__(self, state: SagaState, now: datetime) -> None:
        self.original = state
        self.state = state
        self.now = now
        self.effects: list[Effect] = []
        self.refusal: str | None = None

    # -- plumbing ---------------------------------------------------------------

    def decision(self) -> Decision:
        changed = self.state != self.original
        return Decision(self.state, tuple(self.effects), changed, self.refusal)

    def record(
        self,
        type: HistoryType,
        step: str | None = None,
        attempt: int | None = None,
        detail: dict[str, JSON] | None = None,
    ) -> None:
        self.effects.append(Record(type, step, attempt, detail or {}))

    def set_step(self, index: int, step: StepState) -> None:
        self.state = self.state.with_step(index, step)

    def ignore(self, reply: ReplySucceeded | ReplyFailed, reason: str) -> None:
        outcome = "success" if isinstance(reply, ReplySucceeded) else "failure"
        self.record(
            HistoryType.REPLY_IGNORED,
            reply.step,
            reply.attempt,
            {"kind": reply.kind.value, "outcome": outcome, "reason": reason},
        )

    def context(self) -> ReferenceContext:
        results = {step.name: step.result for step in self.state.steps if step.result is not None}
        return ReferenceContext(saga_id=self.state.saga_id, input=self.state.input, results=results)

    def deadline(self, kind: Kind, purpose: DeadlinePurpose, after: timedelta) -> Deadline:
        return Deadline(at=self.now + after, kind=kind, purpose=purpose)

    # -- actions ----------------------------------------------------------------

    def begin_step(self, index: int) -> None:
        """Send the first attempt of the step at ``index`` (or complete after the last)."""
        if index >= len(self.state.steps):
            self.complete()
            return
        try:
            payload = render_step_payload(self.state.definition, index, self.context())
        except MissingReference as exc:
            step = self.state.steps[index]
            error = ErrorInfo("bad_reference", str(exc), step=step.name)
            self.set_step(index, replace(step, status=StepStatus.FAILED, error=error))
            self.record(HistoryType.STEP_FAILED, step.name, None, error.to_json())
            self.fail_for_good(error)
            return
        step = replace(self.state.steps[index], status=StepStatus.RUNNING, attempts=0)
        self.set_step(index, step)
        self.send_action(index, payload)

    def send_action(self, index: int, payload: dict[str, JSON] | None = None) -> None:
        """Send the next attempt of the step's action and arm its reply deadline."""
        definition = self.state.step_definition(index)
        if payload is None:
            payload = render_step_payload(self.state.definition, index, self.context())
        step = self.state.steps[index]
        attempt = step.attempts + 1
        deadline = self.deadline(Kind.ACTION, DeadlinePurpose.REPLY, definition.timeout)
        self.set_step(index, replace(step, attempts=attempt, deadline=deadline))
        self.effects.append(
            SendCommand(
                participant=definition.participant,
                step=step.name,
                kind=Kind.ACTION,
                command=definition.command,
                attempt=attempt,
                payload=payload,
                idempotency_key=self.state.action_key(index),
            )
        )
        self.record(HistoryType.STEP_SENT, step.name, attempt)

    def complete(self) -> None:
        output: JSON = None
        detail: dict[str, JSON] = {}
        if self.state.definition.output is not None:
            try:
                output = render_output(self.state.definition, self.context())
            except MissingReference as exc:
                # Every step succeeded: the saga's work is done. An output mapping that
                # finds nothing is a definition mistake, reported rather than undone.
                detail["output_error"] = str(exc)
        self.state = replace(self.state, status=SagaStatus.COMPLETED, output=output)
        self.record(HistoryType.COMPLETED, detail=detail)

    def fail_for_good(self, error: ErrorInfo) -> None:
        """A step failed for good: compensate what took effect, newest first."""
        self.state = replace(self.state, status=SagaStatus.COMPENSATING, error=error)
        self.compensate_next()

    def needs_compensation(self, index: int) -> bool:
        step = self.state.steps[index]
        if self.state.step_definition(index).compensation is None:
            return False
        if step.status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATING):
            return True
        return step.status is StepStatus.FAILED and step.effect_possible

    def compensate_next(self) -> None:
        """Start the next compensation, or finish as ``compensated`` when none is left."""
        for index in reversed(range(len(self.state.steps))):
            if self.needs_compensation(index):
                self.begin_compensation(index)
                return
        self.state = replace(self.state, status=SagaStatus.COMPENSATED)
        self.record(HistoryType.COMPENSATED)

    def begin_compensation(self, index: int) -> None:
        step = self.state.steps[index]
        previous = step.compensation
        generation = previous.generation if previous is not None else 0
        compensation = CompensationState(CompensationStatus.RUNNING, generation=generation)
        self.set_step(
            index, replace(step, status=StepStatus.COMPENSATING, compensation=compensation)
        )
        self.send_compensation(index)

    def send_compensation(self, index: int) -> None:
        step = self.state.steps[index]
        assert step.compensation is not None
        definition = self.state.step_definition(index)
        assert definition.compensation is not None
        try:
            payload = render_compensation_payload(self.state.definition, index, self.context())
        except MissingReference as exc:
            error = ErrorInfo("bad_reference", str(exc), step=step.name)
            failed = replace(step.compensation, status=CompensationStatus.FAILED, error=error)
            self.set_step(index, replace(step, compensation=failed, deadline=None))
            self.record(HistoryType.COMPENSATION_FAILED, step.name, None, error.to_json())
            self.fail_saga(error)
            return
        attempt = step.compensation.attempts + 1
        deadline = self.deadline(Kind.COMPENSATION, DeadlinePurpose.REPLY, definition.timeout)
        compensation = replace(step.compensation, attempts=attempt)
        self.set_step(index, replace(step, compensation=compensation, deadline=deadline))
        self.effects.append(
            SendCommand(
                participant=definition.participant,
                step=step.name,
                kind=Kind.COMPENSATION,
                command=definition.compensation.command,
                attempt=attempt,
                payload=payload,
                idempotency_key=self.state.compensation_key(index),
                action_key=self.state.action_key(index),
            )
        )
        self.record(HistoryType.COMPENSATION_SENT, step.name, attempt)

    def fail_saga(self, error: ErrorInfo) -> None:
        """A compensation failed for good: the saga waits for an operator."""
        self.state = replace(self.state, status=SagaStatus.FAILED, error=error)
        self.record(HistoryType.FAILED, error.step, None, error.to_json())

    def retry_later(self, index: int, kind: Kind, failed_attempt: int) -> None:
        """Arm the backoff before the next attempt (or send it now if there is none)."""
        definition = self.state.step_definition(index)
        delay = definition.retry.backoff.delay(failed_attempt)
        if delay <= timedelta(0):
            self.resend(index, kind)
            return
        step = self.state.steps[index]
        self.set_step(
            index, replace(step, deadline=self.deadline(kind, DeadlinePurpose.RETRY, delay))
        )

    def resend(self, index: int, kind: Kind) -> None:
        if kind is Kind.ACTION:
            self.send_action(index)
        else:
            self.send_compensation(index)

    # -- events -----------------------------------------------------------------

    def on_success(self, reply: ReplySucceeded) -> None:
        found = self.state.step(reply.step)
        if found is None:
            self.ignore(reply, f"the saga has no step '{reply.step}'")
            return
        index, step = found
        if reply.kind is Kind.COMPENSATION:
            self.on_compensation_success(index, step, reply)
            return
        if reply.idempotency_key != self.state.action_key(index):
            self.ignore(reply, "the reply is for an earlier idempotency key of this step")
            return
        if step.status is StepStatus.RUNNING and 1 <= reply.attempt <= step.attempts:
            done = replace(
                step, status=StepStatus.SUCCEEDED, result=reply.result, error=None, deadline=None
            )
            self.set_step(index, done)
            self.record(HistoryType.STEP_SUCCEEDED, step.name, reply.attempt)
            if self.state.status is SagaStatus.RUNNING:
                self.begin_step(index + 1)
            return
        if step.status is StepStatus.FAILED and reply.attempt <= step.attempts:
            self.on_late_success(index, step, reply)
            return
        self.ignore(reply, f"step '{step.name}' is {step.status.value}, not waiting for a reply")

    def on_late_success(self, index: int, step: StepState, reply: ReplySucceeded) -> None:
        """The action took effect after the step failed for good: undo it too."""
        if self.state.step_definition(index).compensation is None:
            self.ignore(
                reply, "late success for a step that failed for good; it has no compensation"
            )
            return
        if step.effect_possible and step.result is not None:
            self.ignore(reply, "a late success for this step was already recorded")
            return
        already_planned = step.effect_possible
        self.set_step(index, replace(step, result=reply.result, effect_possible=True))
        self.record(
            HistoryType.STEP_SUCCEEDED, step.name, reply.attempt, {"late": True, "compensate": True}
        )
        if already_planned or self.state.status is not SagaStatus.COMPENSATED:
            # Still compensating (or failed): the step is now in the plan and its
            # compensation will see the result; nothing else to start here.
            return
        self.state = replace(self.state, status=SagaStatus.COMPENSATING)
        self.compensate_next()

    def on_compensation_success(self, index: int, step: StepState, reply: ReplySucceeded) -> None:
        compensation = step.compensation
        if (
            step.status is not StepStatus.COMPENSATING
            or compensation is None
            or compensation.status is not CompensationStatus.RUNNING
            or reply.idempotency_key != self.state.compensation_key(index)
            or not 1 <= reply.attempt <= compensation.attempts
        ):
            self.ignore(reply, f"step '{step.name}' has no compensation waiting for a reply")
            return
        done = replace(compensation, status=CompensationStatus.SUCCEEDED, result=reply.result)
        self.set_step(
            index, replace(step, status=StepStatus.COMPENSATED, compensation=done, deadline=None)
        )
        self.record(HistoryType.COMPENSATION_SUCCEEDED, step.name, reply.attempt)
        if self.state.status is SagaStatus.COMPENSATING:
            self.compensate_next()

    def awaiting_reply(self, step: StepState, kind: Kind, attempt: int) -> bool:
        """True when ``attempt`` of ``kind`` is the attempt in flight on ``step``."""
        deadline = step.deadline
        if deadline is None or deadline.kind is not kind:
            return False
        if deadline.purpose is not DeadlinePurpose.REPLY:
            return False
        current = step.attempts if kind is Kind.ACTION else _compensation_attempts(step)
        return attempt == current

    def on_failure(self, reply: ReplyFailed) -> None:
        found = self.state.step(reply.step)
        if found is None:
            self.ignore(reply, f"the saga has no step '{reply.step}'")
            return
        index, step = found
        expected_key = (
            self.state.action_key(index)
            if reply.kind is Kind.ACTION
            else self.state.compensation_key(index)
        )
        if reply.idempotency_key != expected_key or not self.awaiting_reply(
            step, reply.kind, reply.attempt
        ):
            self.ignore(reply, f"attempt {reply.attempt} of '{step.name}' is not the one in flight")
            return
        error = ErrorInfo(reply.code, reply.message, reply.retryable, step=step.name)
        if reply.kind is Kind.ACTION:
            self.action_failed(index, step, error, reply.attempt)
        else:
            self.compensation_failed(index, step, error, reply.attempt)

    def action_failed(self, index: int, step: StepState, error: ErrorInfo, attempt: int) -> None:
        max_attempts = self.state.step_definition(index).retry.max_attempts
        will_retry = error.retryable and attempt < max_attempts
        detail = {**error.to_json(), "retryable": error.retryable, "will_retry": will_retry}
        self.record(HistoryType.STEP_FAILED, step.name, attempt, detail)
        self.set_step(index, replace(step, error=error, deadline=None))
        if will_retry:
            self.retry_later(index, Kind.ACTION, attempt)
            return
        # A permanent failure is remembered by the participant's inbox, so the key never
        # runs. A retryable one is not: the attempt's command redelivered, or an earlier
        # attempt's still queued, may yet run. Like a last timeout, its outcome is unknown,
        # so the step is compensated (and the compensation cancels the key if it never ran).
        failed = replace(
            self.state.steps[index],
            status=StepStatus.FAILED,
            effect_possible=self.state.steps[index].effect_possible or error.retryable,
        )
        self.set_step(index, failed)
        self.fail_for_good(error)

    def compensation_failed(
        self, index: int, step: StepState, error: ErrorInfo, attempt: int
    ) -> None:
        assert step.compensation is not None
        detail = {**error.to_json(), "retryable": error.retryable, "will_retry": error.retryable}
        self.record(HistoryType.COMPENSATION_FAILED, step.name, attempt, detail)
        compensation = replace(step.compensation, error=error)
        if error.retryable:
            self.set_step(index, replace(step, compensation=compensation, deadline=None))
            self.retry_later(index, Kind.COMPENSATION, attempt)
            return
        failed = replace(compensation, status=CompensationStatus.FAILED)
        self.set_step(index, replace(step, compensation=failed, deadline=None))
        self.fail_saga(error)

    def on_timer(self, timer: TimerFired) -> None:
        found = self.state.step(timer.step)
        if found is None:
            return
        index, step = found
        deadline = step.deadline
        current = step.attempts if timer.kind is Kind.ACTION else _compensation_attempts(step)
        if (
            deadline is None
            or deadline.kind is not timer.kind
            or deadline.purpose is not timer.purpose
            or timer.attempt != current
            or deadline.at > self.now
        ):
            return  # a stale timer: the step has moved on since it was armed
        if timer.purpose is DeadlinePurpose.RETRY:
            self.set_step(index, replace(step, deadline=None))
            self.resend(index, timer.kind)
            return
        definition = self.state.step_definition(index)
        timeout = f"no reply within {_seconds(definition.timeout)}"
        if timer.kind is Kind.COMPENSATION:
            error = ErrorInfo("timeout", timeout, retryable=True, step=step.name)
            self.compensation_failed(index, step, error, current)
            return
        max_attempts = definition.retry.max_attempts
        will_retry = current < max_attempts
        self.record(HistoryType.STEP_TIMED_OUT, step.name, current, {"will_retry": will_retry})
        if will_retry:
            self.set_step(index, replace(step, deadline=None))
            self.retry_later(index, Kind.ACTION, current)
            return
        message = f"{timeout} after {current} attempt{'s' if current > 1 else ''}"
        error = ErrorInfo("timeout", message, retryable=False, step=step.name)
        failed = replace(
            step, status=StepStatus.FAILED, error=error, effect_possible=True, deadline=None
        )
        self.set_step(index, failed)
        self.fail_for_good(error)

    def on_operator_retry(self, event: OperatorRetry) -> None:
        if self.state.status is not SagaStatus.FAILED:
            self.refusal = (
                f"saga {self.state.saga_id} is {self.state.status.value}; "
                "only a failed saga can be retried"
            )
            return
        for index, step in enumerate(self.state.steps):
            compensation = step.compensation
            if compensation is not None and compensation.status is CompensationStatus.FAILED:
                self.record(
                    HistoryType.OPERATOR_RETRY,
                    step.name,
                    None,
                    _reason(event.reason, "compensation"),
                )
                fresh = CompensationState(
                    CompensationStatus.RUNNING, generation=compensation.generation + 1
                )
                self.set_step(index, replace(step, compensation=fresh))
                self.state = replace(self.state, status=SagaStatus.COMPENSATING)
                self.send_compensation(index)
                return
        self.refusal = f"saga {self.state.saga_id} has no failed compensation to retry"

    def on_operator_abort(self, event: OperatorAbort) -> None:
        if self.state.status is not SagaStatus.RUNNING:
            self.refusal = (
                f"saga {self.state.saga_id} is {self.state.status.value}; "
                "only a running saga can be aborted"
            )
            return
        for index, step in enumerate(self.state.steps):
            if step.status is StepStatus.RUNNING:
                self.record(
                    HistoryType.OPERATOR_ABORT, step.name, step.attempts, _reason(event.reason)
                )
                message = "aborted by an operator" + (f": {event.reason}" if event.reason else "")
                error = ErrorInfo("aborted", message, step=step.name)
                aborted = replace(
                    step,
                    status=StepStatus.FAILED,
                    error=error,
                    effect_possible=step.attempts > 0,
                    deadline=None,
                )
                self.set_step(index, aborted)
                self.fail_for_good(error)
                return
        # A running saga always has a step in flight; this is a safety net.
        self.record(HistoryType.OPERATOR_ABORT, detail=_reason(event.reason))
        self.fail_for_good(ErrorInfo("aborted", "aborted by an operator"))

    def on_operator_resolve(self, event: OperatorResolve) -> None:
        if self.state.status is not SagaStatus.FAILED:
            self.refusal = (
                f"saga {self.state.saga_id} is {self.state.status.value}; "
                "only a failed saga can be resolved"
            )
            return
        self.record(HistoryType.OPERATOR_RESOLVE, detail=_reason(event.reason))
        self.state = replace(self.state, status=SagaStatus.COMPENSATED)
        self.record(HistoryType.COMPENSATED, detail={"resolved_by_operator": True})


def _compensation_attempts(step: StepState) -> int:
    return step.compensation.attempts if step.compensation is not None else 0


def _seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g}s"


def _reason(reason: str | None, what: str | None = None) -> dict[str, JSON]:
    detail: dict[str, JSON] = {}
    if reason:
        detail["reason"] = reason
    if what:
        detail["retried"] = what
    return detail
