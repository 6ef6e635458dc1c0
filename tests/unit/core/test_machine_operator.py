"""Rules of the operator actions: abort, retry and resolve (PRODUCT.md "Semantics")."""

from __future__ import annotations

import pytest

from orchestrator.core.events import (
    OperatorAbort,
    OperatorResolve,
    OperatorRetry,
)
from orchestrator.core.state import (
    CompensationStatus,
    HistoryType,
    Kind,
    SagaStatus,
    StepStatus,
)

from .builders import (
    Saga,
    assert_ignored,
    checkout_failing_at,
    compensated_in_order,
    definition,
    saga_in,
    sends,
    step,
    types,
)

H = HistoryType


def test_abort_compensates_the_in_flight_step_then_the_earlier_ones() -> None:
    saga = Saga(
        definition(
            step("a"),
            step("b", compensation_payload={"id": "${steps.b.result.id}"}),
            step("c"),
        )
    )
    saga.succeed("a")
    decision = saga.feed(OperatorAbort(reason="customer called"))
    assert decision.refusal is None
    assert types(decision)[0] is H.OPERATOR_ABORT
    assert types(decision)[-1] is H.COMPENSATION_SENT
    assert saga.status() is SagaStatus.COMPENSATING
    assert saga.of("b").effect_possible is True
    (command,) = sends(decision)
    assert (command.step, command.kind, command.payload) == ("b", Kind.COMPENSATION, {"id": None})
    assert saga.of("b").status is StepStatus.COMPENSATING
    # A reply for the aborted attempt no longer moves the step.
    assert_ignored(saga.succeed("b", attempt=1))
    saga.succeed("b", kind=Kind.COMPENSATION)
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    assert compensated_in_order(saga) == ["b", "a"]
    assert saga.of("c").status is StepStatus.PENDING
    abort = next(r for r in saga.history() if r.type is H.OPERATOR_ABORT)
    assert abort.detail.get("reason") == "customer called"


def test_abort_during_backoff_compensates_the_step_that_was_attempted() -> None:
    saga = Saga(definition(step("a"), step("b")))
    saga.succeed("a")
    saga.time_out("b")  # attempt 1 timed out: its outcome is unknown
    decision = saga.feed(OperatorAbort())
    assert [s.step for s in sends(decision)] == ["b"]
    deadline = saga.of("b").deadline
    assert deadline is not None
    assert deadline.kind is Kind.COMPENSATION


def test_abort_of_in_flight_step_without_compensation_compensates_the_earlier_ones() -> None:
    saga = Saga(definition(step("a"), step("b", compensation=None)))
    saga.succeed("a")
    decision = saga.feed(OperatorAbort())
    assert [(s.step, s.kind) for s in sends(decision)] == [("a", Kind.COMPENSATION)]
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED


@pytest.mark.parametrize(
    "status",
    [SagaStatus.COMPLETED, SagaStatus.COMPENSATING, SagaStatus.COMPENSATED, SagaStatus.FAILED],
)
def test_abort_of_a_saga_that_is_not_running_is_refused_and_changes_nothing(
    status: SagaStatus,
) -> None:
    saga = saga_in(status)
    before = saga.state
    decision = saga.feed(OperatorAbort(reason="why not"))
    assert decision.refusal is not None
    assert status.value in decision.refusal
    assert "abort" in decision.refusal
    assert (decision.changed, decision.effects) == (False, ())
    assert saga.state == before


def test_operator_retry_resends_failed_compensation_under_a_fresh_key() -> None:
    saga = saga_in(SagaStatus.FAILED)
    decision = saga.feed(OperatorRetry(reason="fixed the bug"))
    assert decision.refusal is None
    assert saga.status() is SagaStatus.COMPENSATING
    (command,) = sends(decision)
    assert (command.step, command.kind, command.attempt) == ("a", Kind.COMPENSATION, 1)
    assert command.idempotency_key == "saga-1:a:compensation:r1"
    assert command.action_key == "saga-1:a:action"
    assert types(decision) == [H.OPERATOR_RETRY, H.COMPENSATION_SENT]
    assert saga.history()[-2].detail.get("reason") == "fixed the bug"
    compensation = saga.of("a").compensation
    assert compensation is not None
    assert compensation.status is CompensationStatus.RUNNING
    assert saga.of("a").status is StepStatus.COMPENSATING
    # The old key's answers are ignored; the new key's success finishes the saga.
    assert_ignored(saga.succeed("a", kind=Kind.COMPENSATION, key="saga-1:a:compensation"))
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED


def test_second_operator_retry_uses_the_next_fresh_key() -> None:
    saga = saga_in(SagaStatus.FAILED)
    saga.feed(OperatorRetry())
    saga.fail("a", kind=Kind.COMPENSATION, retryable=False)
    assert saga.status() is SagaStatus.FAILED
    (command,) = sends(saga.feed(OperatorRetry()))
    assert (command.idempotency_key, command.attempt) == ("saga-1:a:compensation:r2", 1)


@pytest.mark.parametrize(
    "status", [SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.COMPENSATED]
)
def test_operator_retry_of_a_saga_that_is_not_failed_is_refused(status: SagaStatus) -> None:
    saga = Saga(definition(step("a"), step("b")))
    if status is not SagaStatus.RUNNING:
        saga = saga_in(status)
    before = saga.state
    decision = saga.feed(OperatorRetry())
    assert decision.refusal is not None
    assert status.value in decision.refusal
    assert (decision.changed, decision.effects) == (False, ())
    assert saga.state == before


def test_operator_resolve_marks_a_failed_saga_compensated() -> None:
    saga = saga_in(SagaStatus.FAILED)
    decision = saga.feed(OperatorResolve(reason="refunded by hand"))
    assert decision.refusal is None
    assert sends(decision) == []
    assert types(decision)[0] is H.OPERATOR_RESOLVE
    resolve = next(r for r in saga.history() if r.type is H.OPERATOR_RESOLVE)
    assert resolve.detail.get("reason") == "refunded by hand"
    assert saga.status() is SagaStatus.COMPENSATED


@pytest.mark.parametrize(
    "status",
    [SagaStatus.RUNNING, SagaStatus.COMPLETED, SagaStatus.COMPENSATING, SagaStatus.COMPENSATED],
)
def test_operator_resolve_of_a_saga_that_is_not_failed_is_refused(status: SagaStatus) -> None:
    saga = Saga(definition(step("a"), step("b")))
    if status is not SagaStatus.RUNNING:
        saga = saga_in(status)
    before = saga.state
    decision = saga.feed(OperatorResolve())
    assert decision.refusal is not None
    assert status.value in decision.refusal
    assert (decision.changed, decision.effects) == (False, ())
    assert saga.state == before


def test_late_success_while_failed_is_compensated_after_operator_retry() -> None:
    saga = Saga(definition(step("a"), step("b"), step("c", max_attempts=2)))
    saga.succeed("a")
    saga.succeed("b")
    saga.time_out("c")
    saga.fire("c")
    saga.fail("c", retryable=False)
    saga.fail("b", kind=Kind.COMPENSATION, retryable=False)
    assert saga.status() is SagaStatus.FAILED
    late = saga.succeed("c", {"id": "C"}, attempt=1)
    assert sends(late) == []  # nothing is sent while failed but by an operator retry
    assert saga.status() is SagaStatus.FAILED
    saga.feed(OperatorRetry())
    saga.succeed("b", kind=Kind.COMPENSATION)
    saga.succeed("c", kind=Kind.COMPENSATION)
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    assert {s.step for s in saga.all_sends() if s.kind is Kind.COMPENSATION} == {"a", "b", "c"}


def test_compensation_commands_carry_the_action_key() -> None:
    saga = checkout_failing_at("send_confirmation")
    for name in ("charge_card", "reserve_stock"):
        (command,) = sends(saga.last)
        assert command.kind is Kind.COMPENSATION
        assert command.idempotency_key == f"saga-1:{name}:compensation"
        assert command.action_key == f"saga-1:{name}:action"
        assert (
            command.participant == {"charge_card": "payments", "reserve_stock": "inventory"}[name]
        )
        saga.succeed(name, kind=Kind.COMPENSATION)
    assert all(s.action_key is None for s in saga.all_sends() if s.kind is Kind.ACTION)
