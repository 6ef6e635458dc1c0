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

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from orchestrator.core.effects import Effect, Record, SendCommand
from orchestrator.core.events import (
    DeadlinePassed,
    Event,
    Migrate,
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
from orchestrator.definitions.conditions import ConditionError
from orchestrator.definitions.errors import MissingReference
from orchestrator.definitions.model import TIMEOUT_CODE, OnFailure, SagaDefinition
from orchestrator.definitions.references import ReferenceContext
from orchestrator.definitions.rendering import (
    render_compensation_payload,
    render_output,
    render_step_payload,
    step_runs,
)

__all__ = ["Decision", "decide", "start"]

DEFINITION_ERRORS = ("bad_reference", "bad_condition")
"""Failure codes of a step that was never sent: the definition or the input is at fault."""


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
    state = SagaState.new(saga_id, definition, input)
    if definition.deadline is not None:
        state = replace(state, deadline=now + definition.deadline)
    run = _Run(state, now)
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
    elif isinstance(event, DeadlinePassed):
        run.on_deadline(event)
    elif isinstance(event, Migrate):
        run.on_migrate(event)
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
        if self.state.status is not SagaStatus.RUNNING and self.state.deadline is not None:
            self.state = replace(self.state, deadline=None)  # it only bounds a running saga
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
        """Start the stage at ``index``: the step, or every step of its parallel group (or
        complete after the last)."""
        if index >= len(self.state.steps):
            self.complete()
            return
        for member in self.state.definition.stage(index):
            if self.state.status is not SagaStatus.RUNNING:
                return  # a member could not be sent: the rest of the group is not started
            self.start_one(member)
        self.advance(index)

    def start_one(self, index: int) -> None:
        """Send the first attempt of one step, or skip it when its ``when:`` is false."""
        step = self.state.steps[index]
        definition = self.state.definition
        context = self.context()
        try:
            if not step_runs(definition, index, context):
                self.set_step(index, replace(step, status=StepStatus.SKIPPED))
                self.record(
                    HistoryType.STEP_SKIPPED,
                    step.name,
                    None,
                    {"when": definition.steps[index].when},
                )
                return
            payload = render_step_payload(definition, index, context)
        except ConditionError as exc:
            message = f"the condition {definition.steps[index].when!r} cannot be evaluated: {exc}"
            self.refuse_step(index, ErrorInfo("bad_condition", message, step=step.name))
            return
        except MissingReference as exc:
            self.refuse_step(index, ErrorInfo("bad_reference", str(exc), step=step.name))
            return
        step = replace(step, status=StepStatus.RUNNING, attempts=0)
        self.set_step(index, step)
        self.send_action(index, payload)

    def advance(self, index: int) -> None:
        """Start the next stage once every step of the stage at ``index`` succeeded or was
        skipped (and the saga still runs)."""
        if self.state.status is not SagaStatus.RUNNING:
            return
        stage = self.state.definition.stage(index)
        done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
        if all(self.state.steps[i].status in done for i in stage):
            self.begin_step(stage.stop)

    def refuse_step(self, index: int, error: ErrorInfo) -> None:
        """The step cannot be sent (its condition or payload finds nothing): it fails for good."""
        step = self.state.steps[index]
        self.set_step(index, replace(step, status=StepStatus.FAILED, error=error))
        self.record(HistoryType.STEP_FAILED, step.name, None, error.to_json())
        self.fail_for_good(error, index)

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

    def fail_for_good(self, error: ErrorInfo, index: int | None) -> None:
        """A step failed for good: compensate what took effect, newest first; or, past the
        pivot or where the step says ``on_failure: fail``, stop for an operator. A step of a
        parallel group that ends after the saga stopped going forward changes nothing more
        (if the saga is compensating, the compensation may now begin)."""
        if self.state.status is SagaStatus.COMPENSATING:
            self.compensate_next()
            return
        if self.state.status is not SagaStatus.RUNNING:
            return
        pivot = self.past_pivot()
        if pivot is not None:
            self.stop(error, f"the saga is past its pivot {pivot!r} and cannot compensate")
            return
        if index is not None and self.state.step_definition(index).on_failure is OnFailure.FAIL:
            self.stop(error, f"step {error.step!r} has on_failure: fail")
            return
        self.compensate(error)

    def stop(self, error: ErrorInfo, why: str) -> None:
        """Stop going forward as ``failed`` for an operator; steps of a parallel group still
        in flight are awaited (their replies are recorded)."""
        self.cancel_waiting_retries()
        self.fail_saga(error, why)

    def cancel_waiting_retries(self) -> None:
        """Steps of a parallel group waiting out a backoff are not sent again once the saga
        stops going forward; the outcome of their last attempt is unknown."""
        for index, step in enumerate(self.state.steps):
            deadline = step.deadline
            if (
                step.status is StepStatus.RUNNING
                and deadline is not None
                and deadline.kind is Kind.ACTION
                and deadline.purpose is DeadlinePurpose.RETRY
            ):
                error = ErrorInfo(
                    "cancelled",
                    "not attempted again: the saga stopped going forward",
                    step=step.name,
                )
                self.set_step(index, self.failed(step, error, effect_possible=True))
                self.record(HistoryType.STEP_FAILED, step.name, step.attempts, error.to_json())

    def resume(self) -> None:
        """Go on from the first stage that is not done (after an operator retry, or a late
        success for the step the saga stopped on)."""
        done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
        for index, step in enumerate(self.state.steps):
            if step.status in done:
                continue
            for member in self.state.definition.stage(index):
                if self.state.status is not SagaStatus.RUNNING:
                    return
                if self.state.steps[member].status is StepStatus.PENDING:
                    self.start_one(member)
            self.advance(index)
            return
        self.complete()

    def failed(self, step: StepState, error: ErrorInfo, *, effect_possible: bool) -> StepState:
        """``step`` failed for good with ``error``; ``effect_possible`` when its action may
        have taken effect unseen (then it is compensated too)."""
        return replace(
            step,
            status=StepStatus.FAILED,
            error=error,
            effect_possible=step.effect_possible or effect_possible,
            deadline=None,
            finished=self.next_finished(),
        )

    def next_finished(self) -> int:
        """The place of the step finishing now in the order steps finished."""
        return 1 + max((step.finished or 0 for step in self.state.steps), default=0)

    def past_pivot(self) -> str | None:
        """The name of the pivot step once it has succeeded (the point of no return)."""
        pivot = self.state.definition.pivot
        if pivot is None or self.state.steps[pivot].status is not StepStatus.SUCCEEDED:
            return None
        return self.state.steps[pivot].name

    def failed_forward(self) -> bool:
        """A ``failed`` saga that stopped on a step's failure, before any compensation."""
        return self.state.status is SagaStatus.FAILED and all(
            step.compensation is None for step in self.state.steps
        )

    def needs_compensation(self, index: int) -> bool:
        step = self.state.steps[index]
        if self.state.step_definition(index).compensation is None:
            return False
        if step.status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATING):
            return True
        return step.status is StepStatus.FAILED and step.effect_possible

    def compensate_next(self) -> None:
        """Start the next compensation, or finish as ``compensated`` when none is left; not
        while a step of a parallel group is still in flight (it is awaited)."""
        if any(step.status is StepStatus.RUNNING for step in self.state.steps):
            return
        # Newest first: by the order steps finished (index order for steps stored before
        # that order was kept, and for steps that finished together).
        waiting = [i for i in range(len(self.state.steps)) if self.needs_compensation(i)]
        if waiting:
            newest = max(waiting, key=lambda i: (self.state.steps[i].finished or 0, i))
            self.begin_compensation(newest)
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

    def fail_saga(self, error: ErrorInfo, why: str | None = None) -> None:
        """A compensation failed for good (or a step, where compensating is not the way):
        the saga waits for an operator."""
        self.state = replace(self.state, status=SagaStatus.FAILED, error=error)
        detail = error.to_json()
        if why is not None:
            detail["why"] = why
        self.record(HistoryType.FAILED, error.step, None, detail)

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
                step,
                status=StepStatus.SUCCEEDED,
                result=reply.result,
                error=None,
                deadline=None,
                finished=self.next_finished(),
            )
            self.set_step(index, done)
            self.record(HistoryType.STEP_SUCCEEDED, step.name, reply.attempt)
            if self.state.status is SagaStatus.RUNNING:
                self.advance(index)
            elif self.state.status is SagaStatus.COMPENSATING:
                self.compensate_next()  # it was awaited: it may have been the last in flight
            return
        if step.status is StepStatus.FAILED and reply.attempt <= step.attempts:
            if self.failed_forward():
                self.resume_after_late_success(index, step, reply)
            else:
                self.on_late_success(index, step, reply)
            return
        self.ignore(reply, f"step '{step.name}' is {step.status.value}, not waiting for a reply")

    def resume_after_late_success(self, index: int, step: StepState, reply: ReplySucceeded) -> None:
        """The saga stopped on this step for an operator, and the step did succeed after
        all: nothing is left to decide, so it goes on."""
        done = replace(
            step,
            status=StepStatus.SUCCEEDED,
            result=reply.result,
            error=None,
            deadline=None,
            finished=self.next_finished(),
        )
        self.set_step(index, done)
        self.record(HistoryType.STEP_SUCCEEDED, step.name, reply.attempt, {"late": True})
        if any(s.status is StepStatus.FAILED for s in self.state.steps):
            return  # another step of its group failed too: still the operator's call
        self.state = replace(self.state, status=SagaStatus.RUNNING, error=None)
        self.resume()

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
        will_retry = error.retryable and self.may_retry(index, error.code, attempt)
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
        self.set_step(
            index, self.failed(self.state.steps[index], error, effect_possible=error.retryable)
        )
        self.fail_for_good(error, index)

    def may_retry(self, index: int, code: str, attempt: int) -> bool:
        """Whether attempt ``attempt`` failing with ``code`` (retryable) gets another one."""
        if self.state.status is not SagaStatus.RUNNING:
            return False  # an awaited step of a parallel group: its current attempt only
        definition = self.state.step_definition(index)
        if not definition.retry.retries(code):
            return False
        return definition.retries_forever() or attempt < definition.retry.max_attempts

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
        will_retry = self.may_retry(index, TIMEOUT_CODE, current)
        self.record(HistoryType.STEP_TIMED_OUT, step.name, current, {"will_retry": will_retry})
        if will_retry:
            self.set_step(index, replace(step, deadline=None))
            self.retry_later(index, Kind.ACTION, current)
            return
        message = f"{timeout} after {current} attempt{'s' if current > 1 else ''}"
        error = ErrorInfo("timeout", message, retryable=False, step=step.name)
        self.set_step(index, self.failed(step, error, effect_possible=True))
        self.fail_for_good(error, index)

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
        if self.failed_forward():
            self.retry_forward(event)
            return
        self.refusal = f"saga {self.state.saga_id} has no failed step or compensation to retry"

    def retry_forward(self, event: OperatorRetry) -> None:
        """A saga stopped going forward: its failed steps go again under fresh keys, and it
        goes on from where it stopped."""
        failed = [i for i, step in enumerate(self.state.steps) if step.status is StepStatus.FAILED]
        for index in failed:
            step = self.state.steps[index]
            if step.error is not None and step.error.code in DEFINITION_ERRORS:
                self.refusal = (
                    f"step {step.name!r} of saga {self.state.saga_id} failed with "
                    f"{step.error.code} ({step.error.message}); sending it again cannot "
                    "help: fix the definition and migrate the saga, or resolve it"
                )
                return
        if not failed:
            self.record(HistoryType.OPERATOR_RETRY, None, None, _reason(event.reason, "saga"))
        for index in failed:
            step = self.state.steps[index]
            self.record(
                HistoryType.OPERATOR_RETRY, step.name, None, _reason(event.reason, "action")
            )
            again = replace(
                step,
                status=StepStatus.PENDING,
                error=None,
                deadline=None,
                generation=step.generation + 1,
                finished=None,
            )
            self.set_step(index, again)
        self.state = replace(self.state, status=SagaStatus.RUNNING, error=None)
        self.resume()

    def on_operator_abort(self, event: OperatorAbort) -> None:
        pivot = self.past_pivot()
        if pivot is not None and self.state.status in (SagaStatus.RUNNING, SagaStatus.FAILED):
            self.refusal = (
                f"saga {self.state.saga_id} is past its pivot {pivot!r} and cannot be "
                "compensated; retry it, or resolve it once a person has finished it"
            )
            return
        if self.failed_forward():
            # on_failure: fail stopped it for a person to decide: they chose to compensate.
            self.record(
                HistoryType.OPERATOR_ABORT,
                self.state.error.step if self.state.error else None,
                None,
                _reason(event.reason),
            )
            message = "aborted by an operator" + (f": {event.reason}" if event.reason else "")
            self.give_up_in_flight(lambda name: ErrorInfo("aborted", message, step=name))
            self.compensate(self.state.error or ErrorInfo("aborted", message))
            return
        if self.state.status is not SagaStatus.RUNNING:
            self.refusal = (
                f"saga {self.state.saga_id} is {self.state.status.value}; only a running saga "
                "(or one a step's on_failure: fail stopped) can be aborted"
            )
            return
        message = "aborted by an operator" + (f": {event.reason}" if event.reason else "")
        in_flight = [s for s in self.state.steps if s.status is StepStatus.RUNNING]
        for step in in_flight:
            self.record(HistoryType.OPERATOR_ABORT, step.name, step.attempts, _reason(event.reason))
        if not in_flight:
            # A running saga always has a step in flight; this is a safety net.
            self.record(HistoryType.OPERATOR_ABORT, detail=_reason(event.reason))
        first = in_flight[0].name if in_flight else None
        self.give_up_in_flight(lambda name: ErrorInfo("aborted", message, step=name))
        self.compensate(ErrorInfo("aborted", message, step=first))

    def give_up_in_flight(self, error_for: Callable[[str], ErrorInfo]) -> None:
        """Every step in flight counts as timed out (its outcome is unknown): failed for
        good, and compensated if it was sent."""
        for index, step in enumerate(self.state.steps):
            if step.status is StepStatus.RUNNING:
                error = error_for(step.name)
                self.set_step(index, self.failed(step, error, effect_possible=step.attempts > 0))

    def on_deadline(self, event: DeadlinePassed) -> None:
        """The saga's deadline passed while it ran: compensate, or past the pivot, stop."""
        deadline = self.state.deadline
        if self.state.status is not SagaStatus.RUNNING or deadline is None or deadline > self.now:
            return  # stale: the saga finished or stopped first
        limit = self.state.definition.deadline
        allowed = _seconds(limit) if limit is not None else "its deadline"
        self.record(HistoryType.DEADLINE_PASSED, detail={"deadline": deadline.isoformat()})
        message = f"the saga did not finish within its deadline of {allowed}"
        pivot = self.past_pivot()
        if pivot is not None:
            self.stop(
                ErrorInfo("deadline", message), f"the deadline passed after the pivot {pivot!r}"
            )
            return
        in_flight = [s for s in self.state.steps if s.status is StepStatus.RUNNING]
        self.give_up_in_flight(lambda name: ErrorInfo("deadline", message, step=name))
        for step in in_flight:
            error = ErrorInfo("deadline", message, step=step.name)
            self.record(HistoryType.STEP_FAILED, step.name, step.attempts, error.to_json())
        self.compensate(ErrorInfo("deadline", message))

    def compensate(self, error: ErrorInfo) -> None:
        self.state = replace(self.state, status=SagaStatus.COMPENSATING, error=error)
        self.cancel_waiting_retries()
        self.compensate_next()

    def on_migrate(self, event: Migrate) -> None:
        """Move the saga to another version when the steps it has run begin that version
        (by name, or by ``renames``); a renamed step keeps its idempotency keys."""
        refusal = self.migration_refusal(event)
        if refusal is not None:
            self.refusal = refusal
            return
        old = self.state.definition
        target = event.definition
        by_new_name = {
            event.renames.get(step.name, step.name): step
            for step in self.state.steps
            if step.status is not StepStatus.PENDING
        }
        steps = []
        for step_definition in target.steps:
            carried = by_new_name.get(step_definition.name)
            if carried is None:
                steps.append(StepState(name=step_definition.name))
                continue
            renamed = carried.name != step_definition.name
            key_name = (carried.key_name or carried.name) if renamed else carried.key_name
            steps.append(replace(carried, name=step_definition.name, key_name=key_name))
        self.state = replace(self.state, definition=target, steps=tuple(steps))
        detail: dict[str, JSON] = {"from_version": old.version, "to_version": target.version}
        if event.renames:
            detail["renamed"] = dict(event.renames)
        if event.reason:
            detail["reason"] = event.reason
        self.record(HistoryType.MIGRATED, detail=detail)
        if self.state.status is SagaStatus.RUNNING:
            self.resume()  # steps the new version added to a stage already under way

    def migration_refusal(self, event: Migrate) -> str | None:
        """Why the saga cannot move to ``event.definition``, as a sentence; None if it can."""
        saga, old, target = self.state.saga_id, self.state.definition, event.definition
        if target.name != old.name:
            return f"saga {saga} is a {old.name!r} saga, not {target.name!r}"
        if target.version == old.version:
            return f"saga {saga} is already on version {old.version}"
        if self.state.status is not SagaStatus.RUNNING and not self.failed_forward():
            return (
                f"saga {saga} is {self.state.status.value}; only a running saga, or one "
                "stopped going forward, can move to another version"
            )
        names = [step.name for step in self.state.steps]
        for old_name, new_name in event.renames.items():
            if old_name not in names:
                return f"version {old.version} has no step {old_name!r} to rename"
            if new_name not in [step.name for step in target.steps]:
                return f"version {target.version} has no step {new_name!r}"
        ran = [
            event.renames.get(s.name, s.name)
            for s in self.state.steps
            if s.status is not StepStatus.PENDING
        ]
        begins = [step.name for step in target.steps[: len(ran)]]
        if ran != begins:
            return (
                f"version {target.version} does not begin with the steps saga {saga} has run "
                f"({', '.join(ran)}) but with ({', '.join(begins)}); map renamed steps "
                "with --map OLD=NEW, or leave the saga on its version"
            )
        for index, step in enumerate(self.state.steps):
            if step.status is not StepStatus.RUNNING:
                continue
            before = old.steps[index]
            after = target.steps[target.step_index(event.renames.get(step.name, step.name))]
            if (before.participant, before.command) != (after.participant, after.command):
                return (
                    f"step {step.name!r} is in flight as {before.participant}.{before.command}; "
                    f"version {target.version} sends {after.participant}.{after.command}: "
                    "migrate once it has finished"
                )
        return None

    def on_operator_resolve(self, event: OperatorResolve) -> None:
        if self.state.status is not SagaStatus.FAILED:
            self.refusal = (
                f"saga {self.state.saga_id} is {self.state.status.value}; "
                "only a failed saga can be resolved"
            )
            return
        self.record(HistoryType.OPERATOR_RESOLVE, detail=_reason(event.reason))
        if self.failed_forward() and self.past_pivot() is not None:
            # Past the point of no return, a person finished the work by hand.
            self.state = replace(self.state, status=SagaStatus.COMPLETED)
            self.record(HistoryType.COMPLETED, detail={"resolved_by_operator": True})
            return
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
