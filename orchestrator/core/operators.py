"""The moves operators, the saga's deadline and migrations make (:class:`OperatorMoves`):
retry, abort, resolve, a passed deadline, a move to another definition version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from orchestrator.core.events import (
    DeadlinePassed,
    Migrate,
    OperatorAbort,
    OperatorResolve,
    OperatorRetry,
)
from orchestrator.core.replies import ReplyMoves
from orchestrator.core.run import DEFINITION_ERRORS, reason_detail, seconds_text
from orchestrator.core.state import (
    JSON,
    CompensationState,
    CompensationStatus,
    ErrorInfo,
    HistoryType,
    SagaStatus,
    StepState,
    StepStatus,
)

__all__ = ["OperatorMoves"]


class OperatorMoves(ReplyMoves):
    """What an operator's action, the deadline or a migration does to the saga."""

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
                    reason_detail(event.reason, "compensation"),
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
            self.record(HistoryType.OPERATOR_RETRY, None, None, reason_detail(event.reason, "saga"))
        for index in failed:
            step = self.state.steps[index]
            self.record(
                HistoryType.OPERATOR_RETRY, step.name, None, reason_detail(event.reason, "action")
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
                reason_detail(event.reason),
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
            self.record(
                HistoryType.OPERATOR_ABORT, step.name, step.attempts, reason_detail(event.reason)
            )
        if not in_flight:
            # A running saga always has a step in flight; this is a safety net.
            self.record(HistoryType.OPERATOR_ABORT, detail=reason_detail(event.reason))
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
        allowed = seconds_text(limit) if limit is not None else "its deadline"
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
        self.record(HistoryType.OPERATOR_RESOLVE, detail=reason_detail(event.reason))
        if self.failed_forward() and self.past_pivot() is not None:
            # Past the point of no return, a person finished the work by hand.
            self.state = replace(self.state, status=SagaStatus.COMPLETED)
            self.record(HistoryType.COMPLETED, detail={"resolved_by_operator": True})
            return
        self.state = replace(self.state, status=SagaStatus.COMPENSATED)
        self.record(HistoryType.COMPENSATED, detail={"resolved_by_operator": True})
