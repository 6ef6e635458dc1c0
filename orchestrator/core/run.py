"""The shared part of one application of an event (:class:`Run`): going forward stage by
stage, failing for good, stopping for an operator, compensating newest first.

See :mod:`orchestrator.core.machine` for the rules; :mod:`.replies` and :mod:`.operators`
hold the moves each kind of event makes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from orchestrator.core.effects import Effect, Record, SendCommand
from orchestrator.core.events import (
    ReplyFailed,
    ReplySucceeded,
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
from orchestrator.definitions.model import OnFailure
from orchestrator.definitions.references import ReferenceContext
from orchestrator.definitions.rendering import (
    render_compensation_payload,
    render_output,
    render_step_payload,
    step_runs,
)

__all__ = ["DEFINITION_ERRORS", "Decision", "Run"]

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


class Run:
    """One application of an event: accumulates the new state and effects. The moves
    that events make are in :mod:`.replies` and :mod:`.operators`; this is what they share:
    going forward, failing for good, compensating."""

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

    def succeeded(self, step: StepState, result: JSON) -> StepState:
        """``step`` succeeded with ``result`` (its place in the finishing order taken now)."""
        return replace(
            step,
            status=StepStatus.SUCCEEDED,
            result=result,
            error=None,
            deadline=None,
            finished=self.next_finished(),
        )

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

    def compensate(self, error: ErrorInfo) -> None:
        self.state = replace(self.state, status=SagaStatus.COMPENSATING, error=error)
        self.cancel_waiting_retries()
        self.compensate_next()


def compensation_attempts(step: StepState) -> int:
    """The attempts of the step's compensation so far."""
    return step.compensation.attempts if step.compensation is not None else 0


def seconds_text(value: timedelta) -> str:
    """``5s``, ``0.5s``: a duration as history and errors show it."""
    seconds = value.total_seconds()
    return f"{seconds:g}s"


def reason_detail(reason: str | None, what: str | None = None) -> dict[str, JSON]:
    """An operator action's history detail: its reason, and what it retried."""
    detail: dict[str, JSON] = {}
    if reason:
        detail["reason"] = reason
    if what:
        detail["retried"] = what
    return detail
