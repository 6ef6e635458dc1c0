"""`saga list --stuck`: a saga is stuck when idle longer than its step may legitimately wait."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from orchestrator.core.state import SagaState, SagaStatus, StepStatus
from orchestrator.definitions.model import (
    Backoff,
    RetryPolicy,
    SagaDefinition,
    StepDefinition,
    StepKind,
)
from orchestrator.operations import STUCK_GRACE, find_stuck, wait_budget
from orchestrator.store import SagaRecord

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

DEFINITION = SagaDefinition(
    name="s",
    version=1,
    steps=(
        StepDefinition(name="a", participant="p", command="do"),
        StepDefinition(
            name="b",
            participant="p",
            command="do",
            kind=StepKind.COMPENSATABLE,
            timeout=timedelta(seconds=10),
            retry=RetryPolicy(
                max_attempts=3,
                backoff=Backoff(
                    initial=timedelta(seconds=1), multiplier=2, max=timedelta(seconds=30)
                ),
            ),
        ),
    ),
)


def _record(status: SagaStatus, running: str | None, idle: timedelta) -> SagaRecord:
    state = SagaState.new("saga-1", DEFINITION, {})
    steps = []
    for step in state.steps:
        if step.name == running:
            steps.append(replace(step, status=StepStatus.RUNNING, attempts=1))
        else:
            steps.append(replace(step, status=StepStatus.SUCCEEDED))
    state = replace(state, status=status, steps=tuple(steps))
    return SagaRecord(state, 1, None, None, NOW - idle - timedelta(hours=1), NOW - idle)


def test_budget_is_timeouts_times_attempts_plus_backoffs() -> None:
    step, budget = wait_budget(_record(SagaStatus.RUNNING, "b", timedelta()).state)
    assert step == "b"
    assert budget == timedelta(seconds=10 * 3 + 1 + 2)


def test_a_retriable_step_may_wait_one_attempt_and_its_longest_backoff() -> None:
    # Retried until it succeeds, it records every attempt: one attempt is the budget.
    retriable = DEFINITION.steps[1].model_copy(update={"kind": StepKind.RETRIABLE})
    definition = DEFINITION.model_copy(update={"steps": (DEFINITION.steps[0], retriable)})
    state = replace(_record(SagaStatus.RUNNING, "b", timedelta()).state, definition=definition)
    assert wait_budget(state) == ("b", timedelta(seconds=10 + 30))


def test_idle_within_the_budget_and_grace_is_not_stuck() -> None:
    allowed = timedelta(seconds=33) + STUCK_GRACE
    assert find_stuck([_record(SagaStatus.RUNNING, "b", allowed)], NOW) == []
    [stuck] = find_stuck([_record(SagaStatus.RUNNING, "b", allowed + timedelta(seconds=1))], NOW)
    assert stuck.waiting_on == "b"
    assert stuck.allowed == allowed


def test_terminal_sagas_are_never_stuck() -> None:
    for status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED):
        assert find_stuck([_record(status, None, timedelta(days=3))], NOW) == []
