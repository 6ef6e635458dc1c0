"""The rules the property tests check: after every decision, and over a whole run.

Written from PRODUCT.md's "Semantics", not from the machine's code: what may be sent when,
which steps get compensated and in which order, what a duplicate may do.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from orchestrator.core.effects import Record, SendCommand
from orchestrator.core.events import (
    Event,
    OperatorAbort,
    OperatorRetry,
    ReplyFailed,
    ReplySucceeded,
    TimerFired,
)
from orchestrator.core.machine import Decision
from orchestrator.core.state import (
    CompensationStatus,
    DeadlinePurpose,
    HistoryType,
    Kind,
    SagaState,
    SagaStatus,
    StepStatus,
)
from orchestrator.definitions.model import OnFailure, StepKind

from .builders import current_attempt, records, sends

if TYPE_CHECKING:
    from .world import World

__all__ = ["check_decision", "check_run", "check_shape", "check_start"]

H = HistoryType
_GAVE_UP = (StepStatus.FAILED, StepStatus.COMPENSATING)


def check_decision(
    before: SagaState, event: Event, decision: Decision, now: datetime, *, noise: bool
) -> None:
    """The rules every single decision obeys; ``noise`` marks an event that must be ignored."""
    after = decision.state
    sent = sends(decision)
    recorded = records(decision)
    assert decision.changed == (after != before), "changed does not say whether state moved"
    if noise or not decision.changed:
        what = "a duplicate, stale or unknown event" if noise else "an ignored event"
        assert after == before, f"{what} changed the state: {event}"
        assert not sent, f"{what} sent {sent}: {event}"
        quiet = isinstance(event, TimerFired) or decision.refusal is not None
        allowed = set() if quiet else {H.REPLY_IGNORED}
        assert {r.type for r in recorded} <= allowed, (
            f"{what} recorded {[r.type.value for r in recorded]}: {event}"
        )
    if before.status is SagaStatus.COMPLETED:
        assert not sent, f"a completed saga sent {sent} on {event}"
        assert not decision.changed, f"a completed saga moved on {event}"
    if before.status is SagaStatus.COMPENSATED and sent:
        # Only a late success for a step that failed for good may restart compensating.
        assert isinstance(event, ReplySucceeded), f"a compensated saga sent {sent} on {event}"
        assert event.kind is Kind.ACTION, event
        found = before.step(event.step)
        assert found is not None
        assert found[1].status is StepStatus.FAILED, event
        assert [(s.step, s.kind) for s in sent] == [(event.step, Kind.COMPENSATION)], sent
    if before.status is SagaStatus.FAILED and sent:
        # A retry; or an abort of a saga a step's failure stopped before compensating.
        forward = all(step.compensation is None for step in before.steps)
        reasons: tuple[type, ...] = (
            (OperatorRetry, OperatorAbort, ReplySucceeded) if forward else (OperatorRetry,)
        )
        assert isinstance(event, reasons), f"a failed saga sent {sent} on {event}"
    pivot = before.definition.pivot
    if pivot is not None and before.steps[pivot].status is StepStatus.SUCCEEDED:
        compensations = [s for s in sent if s.kind is Kind.COMPENSATION]
        assert not compensations, f"compensating past the pivot: {compensations} on {event}"
    _check_sends(after, decision, sent, recorded)
    _check_deadlines(before, after, sent, now)
    check_shape(after)


def check_start(decision: Decision, now: datetime) -> None:
    """The rules a new saga's first decision obeys."""
    state = decision.state
    before = SagaState.new(state.saga_id, state.definition, state.input)
    sent = sends(decision)
    _check_sends(state, decision, sent, records(decision))
    _check_deadlines(before, state, sent, now)
    check_shape(state)


def _check_sends(
    after: SagaState, decision: Decision, sent: list[SendCommand], recorded: list[Record]
) -> None:
    """Every command sent is recorded with its attempt, under the right keys."""
    sent_records = [
        (r.step, r.attempt, Kind.ACTION if r.type is H.STEP_SENT else Kind.COMPENSATION)
        for r in recorded
        if r.type in (H.STEP_SENT, H.COMPENSATION_SENT)
    ]
    assert sent_records == [(s.step, s.attempt, s.kind) for s in sent]
    # One compensation at a time; actions together only for the steps of one stage.
    actions = [s for s in sent if s.kind is Kind.ACTION]
    compensations = [s for s in sent if s.kind is Kind.COMPENSATION]
    assert len(compensations) <= 1, f"more than one compensation at a time: {sent}"
    assert not (actions and compensations), f"actions and a compensation at once: {sent}"
    stages = {after.definition.stage(after.definition.step_index(s.step)) for s in actions}
    assert len(stages) <= 1, f"commands for more than one stage at once: {sent}"
    for command in sent:
        step = after.steps[after.definition.step_index(command.step)]
        action_key = f"{after.saga_id}:{command.step}:action"
        action_key += f":r{step.generation}" if step.generation else ""
        assert command.attempt == current_attempt(step, command.kind)
        if command.kind is Kind.ACTION:
            assert command.idempotency_key == action_key
            assert command.action_key is None
        else:
            generation = step.compensation.generation if step.compensation else 0
            expected = f"{after.saga_id}:{command.step}:compensation"
            expected += f":r{generation}" if generation else ""
            assert command.idempotency_key == expected
            assert command.action_key == action_key


def _check_deadlines(
    before: SagaState, after: SagaState, sent: list[SendCommand], now: datetime
) -> None:
    """A new reply deadline is armed at now + timeout with its send; a retry one after the
    backoff of the attempt that failed."""
    for index, step in enumerate(after.steps):
        deadline = step.deadline
        definition = after.step_definition(index)
        just_sent = [s for s in sent if s.step == step.name]
        if just_sent:
            assert deadline is not None
            assert deadline.purpose is DeadlinePurpose.REPLY
            assert deadline.kind is just_sent[0].kind
        if deadline is None or deadline == before.steps[index].deadline:
            continue
        if deadline.purpose is DeadlinePurpose.REPLY:
            assert just_sent, f"a reply deadline on {step.name} without a command"
            assert deadline.at == now + definition.timeout
        else:
            delay = definition.retry.backoff.delay(current_attempt(step, deadline.kind))
            assert delay.total_seconds() > 0, "a zero backoff must send at once"
            assert deadline.at == now + delay, f"{step.name} retries after {deadline.at - now}"


def check_shape(state: SagaState) -> None:
    """A state's steps agree with its status: deadlines while active (a stopped saga keeps
    only those of steps of a parallel group it awaits), the steps in flight in one stage."""
    armed = [s for s in state.steps if s.deadline is not None]
    running = [i for i, s in enumerate(state.steps) if s.status is StepStatus.RUNNING]
    if state.status is SagaStatus.FAILED:
        assert all(s.status is StepStatus.RUNNING for s in armed), "a stopped saga retries"
        assert all(s.deadline is None or s.deadline.purpose is DeadlinePurpose.REPLY for s in armed)
    elif state.status.terminal:
        assert armed == [], f"a {state.status.value} saga still has deadlines on {armed}"
    else:
        assert armed, f"a {state.status.value} saga waits on nothing"
    assert all(state.steps[i].deadline is not None for i in running), "a running step has no timer"
    if running:
        stage = state.definition.stage(running[0])
        assert all(i in stage for i in running), f"steps in flight in two stages: {running}"
        assert all(s.status is StepStatus.PENDING for s in state.steps[stage.stop :])
    if state.status is SagaStatus.RUNNING:
        assert running, "a running saga has no step in flight"
    if state.status is SagaStatus.COMPENSATING:
        compensating = [s for s in state.steps if s.status is StepStatus.COMPENSATING]
        assert not (running and compensating), "compensating while a step is still in flight"
    if state.status.terminal or state.status is SagaStatus.COMPENSATING:
        assert state.deadline is None, "a saga deadline outlived the running saga"
    if state.status is SagaStatus.COMPLETED:
        # A step past the pivot may have failed: a person finished it (saga resolve).
        pivot = state.definition.pivot
        past = pivot is not None and state.steps[pivot].status is StepStatus.SUCCEEDED
        done = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
        allowed = (*done, StepStatus.FAILED, StepStatus.PENDING) if past else done
        assert all(s.status in allowed for s in state.steps)


def _outcome_unknown(world: World) -> set[str]:
    """Steps whose action may have taken effect unseen: the last attempt timed out or failed
    retryably (the inbox does not remember a retryable failure, so the key may still run),
    or an abort caught the step after it was sent (in flight or waiting to retry)."""
    unknown = set()
    for entry in world.log:
        for index, old in enumerate(entry.before.steps):
            new = entry.decision.state.steps[index]
            if old.status is not StepStatus.RUNNING or new.status not in _GAVE_UP:
                continue
            given_up = new.error is not None and new.error.code in ("cancelled", "deadline")
            if (
                isinstance(entry.event, TimerFired)
                or (isinstance(entry.event, ReplyFailed) and entry.event.retryable)
                or ((isinstance(entry.event, OperatorAbort) or given_up) and old.attempts > 0)
            ):
                unknown.add(old.name)
    return unknown


def _finishing_order(world: World) -> list[str]:
    """Step names in the order they last finished (succeeded or failed for good): each
    decision that finishes steps numbers them after every step finished before it."""
    order: list[str] = []
    numbers: dict[str, int] = {}
    decisions = [(None, world.first), *((e.before, e.decision) for e in world.log)]
    for before, decision in decisions:
        ended = []
        for index, new in enumerate(decision.state.steps):
            old = before.steps[index].finished if before is not None else None
            if new.finished is not None and new.finished != old:
                ended.append(new)
        if before is not None:
            numbers = {s.name: s.finished for s in before.steps if s.finished is not None}
        for step in sorted(ended, key=lambda s: s.finished or 0):
            assert step.finished is not None
            assert all(step.finished > n for n in numbers.values()), (
                f"{step.name} finished as {step.finished} after {numbers}"
            )
            numbers[step.name] = step.finished
            if step.name in order:
                order.remove(step.name)
            order.append(step.name)
    return order


def check_run(world: World) -> None:
    """What holds for a whole run, once the saga is terminal and every reply delivered."""
    state = world.state
    names = [s.name for s in world.definition.steps]
    compensable = {s.name for s in world.definition.steps if s.compensation is not None}
    decisions = [world.first, *(entry.decision for entry in world.log)]
    sent = [command for decision in decisions for command in sends(decision)]
    history = [record for decision in decisions for record in records(decision)]

    assert state.status.terminal, f"the saga ended {state.status.value}"
    assert not world.pending
    assert not [s.name for s in state.steps if s.status is StepStatus.RUNNING]

    # Each action's success is accepted at most once (exactly once when completed).
    succeeded = Counter(r.step for r in history if r.type is H.STEP_SUCCEEDED)
    assert all(count == 1 for count in succeeded.values()), f"successes accepted: {succeeded}"
    skipped = {s.name for s in state.steps if s.status is StepStatus.SKIPPED}
    assert not [c for c in sent if c.step in skipped], "a skipped step was sent a command"
    if state.status is SagaStatus.COMPLETED and not world.resolved:
        assert set(succeeded) == set(names) - skipped
        assert not [s for s in sent if s.kind is Kind.COMPENSATION]
        assert state.output == {"last": state.steps[-1].result["v"]}

    # Attempts of one key go 1, 2, 3..., and an action never beyond max_attempts (a
    # retriable step excepted: it is attempted until it succeeds).
    by_key: dict[str, list[int]] = {}
    for command in sent:
        by_key.setdefault(command.idempotency_key, []).append(command.attempt)
    for key, attempts in by_key.items():
        assert attempts == list(range(1, len(attempts) + 1)), f"{key} attempts {attempts}"
    for step_definition in world.definition.steps:
        tries = by_key.get(f"{state.saga_id}:{step_definition.name}:action", [])
        if step_definition.kind is not StepKind.RETRIABLE:
            assert len(tries) <= step_definition.retry.max_attempts

    # Compensations: only for steps whose action was sent and that succeeded or may have
    # taken effect; newest first (a late success excepted); each completed at most once.
    unknown = _outcome_unknown(world)
    late = {
        e.event.step
        for e in world.log
        if isinstance(e.event, ReplySucceeded)
        and e.event.kind is Kind.ACTION
        and e.decision.changed
        and e.before.steps[names.index(e.event.step)].status is StepStatus.FAILED
    }
    order: list[str] = []
    for position, command in enumerate(sent):
        if command.kind is Kind.ACTION:
            continue
        assert command.step in compensable
        assert any(s.kind is Kind.ACTION and s.step == command.step for s in sent[:position]), (
            f"compensation of {command.step}, whose action was never sent"
        )
        if command.step not in order:
            order.append(command.step)
    for name in order:
        assert succeeded[name] == 1 or name in unknown, f"{name} compensated for nothing"
    # Newest first: in the reverse of the order the steps finished (for steps run one at a
    # time, the reverse of definition order).
    finished_order = _finishing_order(world)
    in_order = [finished_order.index(name) for name in order if name not in late]
    assert in_order == sorted(in_order, reverse=True), f"compensation order {order}"
    if all(s.group is None for s in world.definition.steps):
        by_index = [names.index(name) for name in order if name not in late]
        assert by_index == sorted(by_index, reverse=True), f"compensation order {order}"
    done = Counter(r.step for r in history if r.type is H.COMPENSATION_SUCCEEDED)
    assert all(count == 1 for count in done.values()), f"compensations completed: {done}"

    if state.status is SagaStatus.COMPENSATED and not world.resolved:
        for index, step in enumerate(state.steps):
            name = names[index]
            took_effect = world.action_effects[name] > 0
            needed = name in compensable and (
                succeeded[name] == 1 or name in unknown or took_effect
            )
            if needed:
                assert step.status is StepStatus.COMPENSATED, f"{name} ended {step.status.value}"
                assert step.compensation is not None
                assert step.compensation.status is CompensationStatus.SUCCEEDED
            else:
                assert name not in order, f"{name} was compensated for nothing"

    if state.status is SagaStatus.FAILED and all(s.compensation is None for s in state.steps):
        # Stopped going forward: past the pivot, or the step says on_failure: fail.
        stopped = [i for i, s in enumerate(state.steps) if s.status is StepStatus.FAILED]
        pivot = world.definition.pivot
        past_pivot = pivot is not None and state.steps[pivot].status is StepStatus.SUCCEEDED
        policy = [world.definition.steps[i].on_failure is OnFailure.FAIL for i in stopped]
        assert past_pivot or any(policy), "stopped without a reason to"
    elif state.status is SagaStatus.FAILED:
        failed = [
            (index, s)
            for index, s in enumerate(state.steps)
            if s.compensation is not None and s.compensation.status is CompensationStatus.FAILED
        ]
        assert len(failed) == 1, failed
        index, step = failed[0]
        assert step.status is StepStatus.COMPENSATING
        key = state.compensation_key(index)
        assert key in world.refused_keys, f"failed, but nobody refused {key} for good"
