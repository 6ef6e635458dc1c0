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
        assert isinstance(event, OperatorRetry), f"a failed saga sent {sent} on {event}"
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
    assert len(sent) <= 1, f"more than one command at a time: {sent}"
    for command in sent:
        action_key = f"{after.saga_id}:{command.step}:action"
        step = after.steps[after.definition.step_index(command.step)]
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
    """A state's steps agree with its status: one deadline while active, none when terminal."""
    armed = [s.name for s in state.steps if s.deadline is not None]
    if state.status.terminal:
        assert armed == [], f"a {state.status.value} saga still has deadlines on {armed}"
    else:
        assert len(armed) == 1, f"a {state.status.value} saga waits on {armed}"
    running = [i for i, s in enumerate(state.steps) if s.status is StepStatus.RUNNING]
    assert len(running) <= 1
    if running:
        assert state.status is SagaStatus.RUNNING
        assert all(s.status is StepStatus.PENDING for s in state.steps[running[0] + 1 :])
    if state.status is SagaStatus.RUNNING:
        assert len(running) == 1
    if state.status is SagaStatus.COMPLETED:
        assert all(s.status is StepStatus.SUCCEEDED for s in state.steps)


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
            if (
                isinstance(entry.event, TimerFired)
                or (isinstance(entry.event, ReplyFailed) and entry.event.retryable)
                or (isinstance(entry.event, OperatorAbort) and old.attempts > 0)
            ):
                unknown.add(old.name)
    return unknown


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

    # Each action's success is accepted at most once (exactly once when completed).
    succeeded = Counter(r.step for r in history if r.type is H.STEP_SUCCEEDED)
    assert all(count == 1 for count in succeeded.values()), f"successes accepted: {succeeded}"
    if state.status is SagaStatus.COMPLETED:
        assert set(succeeded) == set(names)
        assert not [s for s in sent if s.kind is Kind.COMPENSATION]
        assert state.output == {"last": state.steps[-1].result["v"]}

    # Attempts of one key go 1, 2, 3..., and an action never beyond max_attempts.
    by_key: dict[str, list[int]] = {}
    for command in sent:
        by_key.setdefault(command.idempotency_key, []).append(command.attempt)
    for key, attempts in by_key.items():
        assert attempts == list(range(1, len(attempts) + 1)), f"{key} attempts {attempts}"
    for step_definition in world.definition.steps:
        tries = by_key.get(f"{state.saga_id}:{step_definition.name}:action", [])
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
    in_order = [names.index(name) for name in order if name not in late]
    assert in_order == sorted(in_order, reverse=True), f"compensation order {order}"
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

    if state.status is SagaStatus.FAILED:
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
