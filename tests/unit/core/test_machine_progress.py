"""Rules of a saga moving forward: start, success, retries and their backoff (PRODUCT.md
"Semantics")."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.core.state import (
    Deadline,
    DeadlinePurpose,
    HistoryType,
    Kind,
    SagaStatus,
    StepStatus,
)

from .builders import (
    ORDER,
    T0,
    Saga,
    backoff,
    definition,
    order_checkout,
    sends,
    step,
    types,
)

H = HistoryType


# -- start and the happy path ------------------------------------------------------------


def test_start_sends_step_one_attempt_one_with_rendered_payload_and_action_key() -> None:
    saga = Saga(order_checkout(), ORDER, saga_id="s-9")
    (command,) = sends(saga.last)
    assert command.participant == "inventory"
    assert command.step == "reserve_stock"
    assert command.kind is Kind.ACTION
    assert command.command == "reserve"
    assert command.attempt == 1
    assert command.payload == {"order_id": "o-1", "note": "order o-1"}
    assert command.idempotency_key == "s-9:reserve_stock:action"
    assert saga.status() is SagaStatus.RUNNING
    assert saga.of("reserve_stock").status is StepStatus.RUNNING
    assert saga.of("reserve_stock").attempts == 1
    assert [s.status for s in saga.state.steps[1:]] == [StepStatus.PENDING, StepStatus.PENDING]


def test_start_arms_reply_deadline_at_now_plus_step_timeout() -> None:
    saga = Saga(order_checkout(), ORDER)
    assert saga.of("reserve_stock").deadline == Deadline(
        at=T0 + timedelta(seconds=10), kind=Kind.ACTION, purpose=DeadlinePurpose.REPLY
    )


def test_start_records_started_then_step_sent() -> None:
    saga = Saga(order_checkout(), ORDER)
    history = saga.history()
    assert [r.type for r in history] == [H.STARTED, H.STEP_SENT]
    assert (history[1].step, history[1].attempt) == ("reserve_stock", 1)


def test_success_sends_next_step_with_payload_rendered_from_previous_result() -> None:
    saga = Saga(
        definition(
            step("a"),
            step(
                "b",
                payload={
                    "count": "${steps.a.result.count}",
                    "items": "${steps.a.result.items}",
                    "whole": "${steps.a.result}",
                    "text": "n=${steps.a.result.count} id=${saga.id}",
                    "flag": "${input.flag}",
                },
            ),
        ),
        {"flag": True},
        saga_id="s-2",
    )
    result = {"count": 3, "items": [1, {"x": None}], "nested": {"ok": 1.5}}
    decision = saga.succeed("a", result)
    assert types(decision) == [H.STEP_SUCCEEDED, H.STEP_SENT]
    (command,) = sends(decision)
    assert command.step == "b"
    assert command.attempt == 1
    assert command.idempotency_key == "s-2:b:action"
    assert command.payload == {
        "count": 3,
        "items": [1, {"x": None}],
        "whole": result,
        "text": "n=3 id=s-2",
        "flag": True,
    }
    assert isinstance(command.payload["count"], int)
    assert saga.of("a").status is StepStatus.SUCCEEDED
    assert saga.of("a").result == result
    assert saga.of("a").deadline is None
    assert saga.of("b").deadline == Deadline(
        at=T0 + timedelta(seconds=10), kind=Kind.ACTION, purpose=DeadlinePurpose.REPLY
    )


def test_last_success_completes_with_output_mapping() -> None:
    saga = Saga(order_checkout(), ORDER)
    saga.succeed("reserve_stock", {"reservation_id": "r-1"})
    saga.succeed("charge_card", {"charge_id": "c-7"})
    decision = saga.succeed("send_confirmation", {})
    assert sends(decision) == []
    assert types(decision) == [H.STEP_SUCCEEDED, H.COMPLETED]
    assert saga.status() is SagaStatus.COMPLETED
    assert saga.state.output == {"charge_id": "c-7"}
    assert all(s.status is StepStatus.SUCCEEDED for s in saga.state.steps)
    assert all(s.deadline is None for s in saga.state.steps)


# -- retries ------------------------------------------------------------------------------


def test_retryable_failure_arms_retry_deadline_after_initial_backoff() -> None:
    saga = Saga(definition(step("a", retry_backoff=backoff(2, 3, 100))))
    saga.advance(1)
    decision = saga.fail("a", retryable=True)
    assert sends(decision) == []
    assert types(decision) == [H.STEP_FAILED]
    assert saga.of("a").status is StepStatus.RUNNING
    assert saga.of("a").deadline == Deadline(
        at=T0 + timedelta(seconds=3), kind=Kind.ACTION, purpose=DeadlinePurpose.RETRY
    )
    assert saga.status() is SagaStatus.RUNNING


def test_backoff_is_initial_then_multiplied_then_capped_at_max() -> None:
    saga = Saga(definition(step("a", max_attempts=6, retry_backoff=backoff(1, 3, 10))))
    delays = []
    for _ in range(5):
        saga.fail("a", retryable=True)
        deadline = saga.of("a").deadline
        assert deadline is not None
        assert deadline.purpose is DeadlinePurpose.RETRY
        delays.append((deadline.at - saga.now).total_seconds())
        saga.fire("a")
    assert delays == [1, 3, 9, 10, 10]
    assert saga.of("a").attempts == 6


def test_retry_timer_sends_next_attempt_under_same_key() -> None:
    saga = Saga(definition(step("a", timeout=7)), saga_id="s-3")
    saga.fail("a", retryable=True)
    decision = saga.fire("a")
    (command,) = sends(decision)
    assert (command.attempt, command.idempotency_key) == (2, "s-3:a:action")
    assert command.payload == sends(saga.decisions[0])[0].payload
    assert types(decision) == [H.STEP_SENT]
    assert saga.of("a").deadline == Deadline(
        at=saga.now + timedelta(seconds=7), kind=Kind.ACTION, purpose=DeadlinePurpose.REPLY
    )


def test_zero_backoff_sends_next_attempt_at_once() -> None:
    saga = Saga(definition(step("a", retry_backoff=backoff(0, 2, 0))))
    decision = saga.fail("a", retryable=True)
    (command,) = sends(decision)
    assert command.attempt == 2
    assert types(decision) == [H.STEP_FAILED, H.STEP_SENT]
    deadline = saga.of("a").deadline
    assert deadline is not None
    assert deadline.purpose is DeadlinePurpose.REPLY


def test_reply_timeout_with_attempts_left_records_timed_out_and_retries() -> None:
    saga = Saga(definition(step("a", max_attempts=2)))
    decision = saga.time_out("a")
    assert types(decision) == [H.STEP_TIMED_OUT]
    assert sends(decision) == []
    deadline = saga.of("a").deadline
    assert deadline is not None
    assert deadline.purpose is DeadlinePurpose.RETRY
    (command,) = sends(saga.fire("a"))
    assert command.attempt == 2
