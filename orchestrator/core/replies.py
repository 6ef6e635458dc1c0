"""The moves replies and timers make (:class:`ReplyMoves`): a success, a failure, a
deadline passing, with the retry policy of the step."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.events import (
    ReplyFailed,
    ReplySucceeded,
    TimerFired,
)
from orchestrator.core.run import Run, compensation_attempts, seconds_text
from orchestrator.core.state import (
    CompensationStatus,
    DeadlinePurpose,
    ErrorInfo,
    HistoryType,
    Kind,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from orchestrator.definitions.model import TIMEOUT_CODE, OnFailure

__all__ = ["ReplyMoves", "expects_reply"]


def expects_reply(state: SagaState, step: str, kind: Kind, attempt: int) -> bool:
    """True when ``state`` has ``kind`` of ``step`` in flight and has sent it at least
    ``attempt`` times: the saga, as given, is waiting for such a reply.

    A process that remembers how it left a saga decides a reply on that memory only if the
    remembered saga waits for it; otherwise another process has most likely moved the saga
    since (it sent the command this reply answers), and reading it is cheaper than a write
    refused for its stale version. A guess either way, and a coarse one (keys and late
    replies are the state machine's to judge): a wrong "no" costs a read, a wrong "yes" a
    refused write and then a read, since the write is checked against the saga's version."""
    found = state.step(step)
    if found is None:
        return False
    current = found[1]
    if kind is Kind.ACTION:
        return current.status is StepStatus.RUNNING and 1 <= attempt <= current.attempts
    compensation = current.compensation
    return (
        current.status is StepStatus.COMPENSATING
        and compensation is not None
        and compensation.status is CompensationStatus.RUNNING
        and 1 <= attempt <= compensation.attempts
    )


class ReplyMoves(Run):
    """What a participant's reply or a step's timer does to the saga."""

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
            self.set_step(index, self.succeeded(step, reply.result))
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
        self.set_step(index, self.succeeded(step, reply.result))
        self.record(HistoryType.STEP_SUCCEEDED, step.name, reply.attempt, {"late": True})
        failed = [i for i, s in enumerate(self.state.steps) if s.status is StepStatus.FAILED]
        if not failed:
            self.state = replace(self.state, status=SagaStatus.RUNNING, error=None)
            self.resume()
            return
        # Another step of its group failed too: that failure decides now. Past the pivot,
        # or on a step that says on_failure: fail, it is still the operator's call.
        definition = self.state.definition
        if self.past_pivot() is not None:
            return
        if any(definition.steps[i].on_failure is OnFailure.FAIL for i in failed):
            return
        error = self.state.steps[failed[0]].error
        self.compensate(error or ErrorInfo("failed", "a step failed for good"))

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
        current = step.attempts if kind is Kind.ACTION else compensation_attempts(step)
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
        current = step.attempts if timer.kind is Kind.ACTION else compensation_attempts(step)
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
        timeout = f"no reply within {seconds_text(definition.timeout)}"
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
