"""Rules of failing for good and compensating, late successes included (PRODUCT.md
"Semantics")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.core.state import (
    CompensationStatus,
    Deadline,
    DeadlinePurpose,
    HistoryType,
    Kind,
    SagaStatus,
    StepStatus,
)

from .builders import (
    Saga,
    assert_ignored,
    backoff,
    checkout_failing_at,
    compensated_in_order,
    definition,
    sends,
    step,
    types,
)

H = HistoryType


# -- failing for good and compensating ----------------------------------------------------


def test_a_permanent_failure_fails_the_step_and_compensates_completed_steps_in_reverse() -> None:
    saga = Saga(definition(step("a"), step("b"), step("c", max_attempts=2)))
    saga.succeed("a", {"id": "A"})
    saga.succeed("b", {"id": "B"})
    decision = saga.fail("c", retryable=False)
    assert saga.of("c").status is StepStatus.FAILED
    assert not saga.of("c").effect_possible  # the participant's inbox remembers the failure
    assert saga.status() is SagaStatus.COMPENSATING
    assert saga.state.error is not None
    assert saga.state.error.step == "c"
    (command,) = sends(decision)
    assert (command.step, command.kind, command.attempt) == ("b", Kind.COMPENSATION, 1)
    assert types(decision) == [H.STEP_FAILED, H.COMPENSATION_SENT]


def test_retries_exhausted_on_a_retryable_failure_compensate_the_failed_step_first() -> None:
    """A retryable failure is not remembered by the inbox: a redelivered command, or an
    earlier attempt's still queued, may yet run under the key. Its outcome is unknown, as
    after a last timeout, so its compensation goes first (and cancels the key)."""
    saga = Saga(definition(step("a"), step("b"), step("c", max_attempts=2)))
    saga.succeed("a", {"id": "A"})
    saga.succeed("b", {"id": "B"})
    saga.fail("c", retryable=True)
    saga.fire("c")
    decision = saga.fail("c", retryable=True)
    assert saga.of("c").effect_possible
    assert saga.status() is SagaStatus.COMPENSATING
    (command,) = sends(decision)
    assert (command.step, command.kind, command.attempt) == ("c", Kind.COMPENSATION, 1)
    assert types(decision) == [H.STEP_FAILED, H.COMPENSATION_SENT]
    after = saga.succeed("c", kind=Kind.COMPENSATION)
    assert [(s.step, s.kind) for s in sends(after)] == [("b", Kind.COMPENSATION)]


def test_compensations_run_one_at_a_time_each_after_the_previous_succeeded() -> None:
    saga = Saga(definition(step("a"), step("b"), step("c"), step("d")))
    for name in ("a", "b", "c"):
        saga.succeed(name)
    saga.advance(2)
    first = saga.fail("d", retryable=False)
    assert [(s.step, s.kind) for s in sends(first)] == [("c", Kind.COMPENSATION)]
    assert saga.of("c").deadline == Deadline(
        at=saga.now + timedelta(seconds=10), kind=Kind.COMPENSATION, purpose=DeadlinePurpose.REPLY
    )
    assert saga.of("b").status is StepStatus.SUCCEEDED
    # c's compensation fails (retryably) once: b must still wait.
    waiting = saga.fail("c", kind=Kind.COMPENSATION, retryable=True)
    assert sends(waiting) == []
    retried = saga.fire("c")
    assert [(s.step, s.kind) for s in sends(retried)] == [("c", Kind.COMPENSATION)]
    second = saga.succeed("c", kind=Kind.COMPENSATION)
    assert [(s.step, s.kind) for s in sends(second)] == [("b", Kind.COMPENSATION)]
    assert types(second) == [H.COMPENSATION_SUCCEEDED, H.COMPENSATION_SENT]
    third = saga.succeed("b", kind=Kind.COMPENSATION)
    assert [(s.step, s.kind) for s in sends(third)] == [("a", Kind.COMPENSATION)]
    last = saga.succeed("a", kind=Kind.COMPENSATION)
    assert sends(last) == []
    assert types(last) == [H.COMPENSATION_SUCCEEDED, H.COMPENSATED]
    assert saga.status() is SagaStatus.COMPENSATED
    assert [s.status for s in saga.state.steps] == [StepStatus.COMPENSATED] * 3 + [
        StepStatus.FAILED
    ]
    assert compensated_in_order(saga) == ["c", "b", "a"]


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        ("reserve_stock", []),
        ("charge_card", ["reserve_stock"]),
        ("send_confirmation", ["charge_card", "reserve_stock"]),
    ],
)
def test_permanent_failure_in_order_checkout_compensates_the_completed_steps(
    failing: str, expected: list[str]
) -> None:
    saga = checkout_failing_at(failing)
    payloads = {"reserve_stock": {"reservation_id": "r-1"}, "charge_card": {"charge_id": "c-1"}}
    commands = {"reserve_stock": "release", "charge_card": "refund"}
    for name in expected:
        (command,) = sends(saga.last)
        assert (command.step, command.kind, command.attempt) == (name, Kind.COMPENSATION, 1)
        assert command.command == commands[name]
        assert command.payload == payloads[name]
        saga.succeed(name, kind=Kind.COMPENSATION)
    assert sends(saga.last) == []
    assert saga.status() is SagaStatus.COMPENSATED
    assert compensated_in_order(saga) == expected
    assert saga.of(failing).status is StepStatus.FAILED
    assert saga.of(failing).compensation is None


def test_step_without_compensation_is_skipped() -> None:
    saga = Saga(definition(step("a"), step("b", compensation=None), step("c")))
    saga.succeed("a")
    saga.succeed("b")
    decision = saga.fail("c", retryable=False)
    assert [(s.step, s.kind) for s in sends(decision)] == [("a", Kind.COMPENSATION)]
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    assert saga.of("b").status is StepStatus.SUCCEEDED
    assert saga.of("b").compensation is None


def test_nothing_to_compensate_ends_compensated_directly() -> None:
    saga = Saga(definition(step("a", compensation=None), step("b")))
    saga.succeed("a")
    decision = saga.fail("b", retryable=False)
    assert sends(decision) == []
    assert types(decision) == [H.STEP_FAILED, H.COMPENSATED]
    assert saga.status() is SagaStatus.COMPENSATED


def test_last_attempt_timed_out_compensates_that_step_first_then_earlier_ones() -> None:
    saga = Saga(
        definition(
            step("a"),
            step(
                "b",
                max_attempts=2,
                compensation_payload={"what": "${steps.b.result.id}", "a": "${steps.a.result.id}"},
            ),
        )
    )
    saga.succeed("a", {"id": "A"})
    saga.time_out("b")
    saga.fire("b")
    decision = saga.time_out("b")
    assert types(decision) == [H.STEP_TIMED_OUT, H.COMPENSATION_SENT]
    assert saga.of("b").status is StepStatus.COMPENSATING
    assert saga.of("b").effect_possible is True
    assert saga.status() is SagaStatus.COMPENSATING
    (command,) = sends(decision)
    assert (command.step, command.kind) == ("b", Kind.COMPENSATION)
    assert command.payload == {"what": None, "a": "A"}
    saga.succeed("b", kind=Kind.COMPENSATION)
    assert [(s.step, s.kind) for s in sends(saga.last)] == [("a", Kind.COMPENSATION)]
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    assert compensated_in_order(saga) == ["b", "a"]


def test_compensation_payload_gets_null_for_own_result_when_step_timed_out() -> None:
    saga = Saga(
        definition(
            step(
                "a",
                max_attempts=1,
                compensation_payload={
                    "whole": "${steps.a.result}",
                    "field": "${steps.a.result.reservation_id}",
                    "text": "undo ${steps.a.result.reservation_id}",
                },
            )
        )
    )
    (command,) = sends(saga.time_out("a"))
    assert command.kind is Kind.COMPENSATION
    assert command.payload["whole"] is None
    assert command.payload["field"] is None
    assert command.payload["text"] == "undo null"


@pytest.mark.parametrize("how", ["retryable_failure", "timeout"])
def test_compensation_is_retried_with_backoff_until_it_succeeds(how: str) -> None:
    saga = Saga(definition(step("a", timeout=4, retry_backoff=backoff(1, 2, 5)), step("b")))
    saga.succeed("a")
    saga.fail("b", retryable=False)
    delays = []
    for attempt in range(1, 21):
        assert saga.current_attempt("a", Kind.COMPENSATION) == attempt
        if how == "timeout":
            decision = saga.time_out("a")
        else:
            saga.advance(0.5)
            decision = saga.fail("a", kind=Kind.COMPENSATION, retryable=True)
        assert types(decision) == [H.COMPENSATION_FAILED]
        assert sends(decision) == []
        assert saga.status() is SagaStatus.COMPENSATING
        deadline = saga.of("a").deadline
        assert deadline is not None
        assert (deadline.kind, deadline.purpose) == (Kind.COMPENSATION, DeadlinePurpose.RETRY)
        delays.append((deadline.at - saga.now).total_seconds())
        (command,) = sends(saga.fire("a"))
        assert (command.kind, command.attempt) == (Kind.COMPENSATION, attempt + 1)
        assert command.idempotency_key == "saga-1:a:compensation"
    assert delays == [1, 2, 4] + [5] * 17
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    compensation = saga.of("a").compensation
    assert compensation is not None
    assert (compensation.status, compensation.attempts) == (CompensationStatus.SUCCEEDED, 21)


def test_compensation_permanent_failure_fails_saga_and_step_stays_compensating() -> None:
    saga = Saga(definition(step("a"), step("b"), step("c")))
    saga.succeed("a")
    saga.succeed("b")
    saga.fail("c", retryable=False)
    decision = saga.fail("b", kind=Kind.COMPENSATION, retryable=False, code="gone")
    assert sends(decision) == []
    assert types(decision) == [H.COMPENSATION_FAILED, H.FAILED]
    assert saga.status() is SagaStatus.FAILED
    assert saga.of("b").status is StepStatus.COMPENSATING
    compensation = saga.of("b").compensation
    assert compensation is not None
    assert compensation.status is CompensationStatus.FAILED
    assert compensation.error is not None
    assert compensation.error.code == "gone"
    assert saga.of("b").deadline is None
    # a, older, was not compensated: the saga waits for an operator.
    assert saga.of("a").status is StepStatus.SUCCEEDED


def test_bad_reference_at_run_time_fails_the_step_for_good_with_code_bad_reference() -> None:
    saga = Saga(
        definition(step("a"), step("b", payload={"x": "${input.missing.deep}"}), step("c")),
        {"present": 1},
    )
    decision = saga.succeed("a")
    assert saga.of("b").status is StepStatus.FAILED
    error = saga.of("b").error
    assert error is not None
    assert error.code == "bad_reference"
    assert "input.missing.deep" in error.message
    assert saga.of("b").attempts == 0
    # b's action was never sent, so only a is compensated.
    assert [(s.step, s.kind) for s in sends(decision)] == [("a", Kind.COMPENSATION)]
    assert H.STEP_SENT not in types(decision)
    assert saga.status() is SagaStatus.COMPENSATING
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    assert saga.of("b").compensation is None


def test_step_one_bad_reference_sends_nothing_and_ends_compensated() -> None:
    saga = Saga(definition(step("a", payload={"x": "${input.nope}"}), step("b")), {})
    assert sends(saga.last) == []
    assert types(saga.last) == [H.STARTED, H.STEP_FAILED, H.COMPENSATED]
    assert saga.status() is SagaStatus.COMPENSATED
    error = saga.of("a").error
    assert error is not None
    assert error.code == "bad_reference"


def test_compensation_payload_that_finds_nothing_leaves_the_saga_failed() -> None:
    """Not in PRODUCT.md for compensations; the machine treats it as a compensation that
    failed for good (the operator fixes the definition or cleans up by hand)."""
    saga = Saga(
        definition(
            step("a", compensation_payload={"r": "${steps.a.result.reservation_id}"}), step("b")
        )
    )
    saga.succeed("a", {"other": 1})
    decision = saga.fail("b", retryable=False)
    assert sends(decision) == []
    assert saga.status() is SagaStatus.FAILED
    compensation = saga.of("a").compensation
    assert compensation is not None
    assert compensation.status is CompensationStatus.FAILED
    assert compensation.error is not None
    assert compensation.error.code == "bad_reference"
    assert saga.of("a").status is StepStatus.COMPENSATING


# -- late successes ---------------------------------------------------------------------------


def late_success_saga() -> Saga:
    """a succeeded; b's attempt 1 timed out, attempt 2 failed permanently; a compensated."""
    saga = Saga(definition(step("a"), step("b", max_attempts=2)))
    saga.succeed("a")
    saga.time_out("b")
    saga.fire("b")
    saga.fail("b", retryable=False)
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    return saga


def test_late_success_after_saga_compensated_compensates_that_step() -> None:
    saga = late_success_saga()
    decision = saga.succeed("b", {"id": "late"}, attempt=1)
    assert decision.changed is True
    assert saga.status() is SagaStatus.COMPENSATING
    assert H.STEP_SUCCEEDED in types(decision)
    (command,) = sends(decision)
    assert (command.step, command.kind, command.attempt) == ("b", Kind.COMPENSATION, 1)
    assert command.action_key == "saga-1:b:action"
    assert saga.of("b").status is StepStatus.COMPENSATING
    done = saga.succeed("b", kind=Kind.COMPENSATION)
    assert types(done) == [H.COMPENSATION_SUCCEEDED, H.COMPENSATED]
    assert saga.status() is SagaStatus.COMPENSATED
    assert saga.of("b").status is StepStatus.COMPENSATED
    assert saga.of("a").status is StepStatus.COMPENSATED
    assert [s.step for s in saga.all_sends() if s.kind is Kind.COMPENSATION] == ["a", "b"]


def test_late_success_while_compensating_compensates_that_step_next() -> None:
    saga = Saga(definition(step("a"), step("b"), step("c", max_attempts=2)))
    saga.succeed("a")
    saga.succeed("b")
    saga.time_out("c")
    saga.fire("c")
    saga.fail("c", retryable=False)
    late = saga.succeed("c", {"id": "C"}, attempt=1)
    assert sends(late) == []  # one compensation at a time: b's is in flight
    (command,) = sends(saga.succeed("b", kind=Kind.COMPENSATION))
    assert command.step == "c"
    assert command.payload == {}
    (command,) = sends(saga.succeed("c", kind=Kind.COMPENSATION))
    assert command.step == "a"
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    assert saga.of("c").status is StepStatus.COMPENSATED


def test_late_success_for_step_without_compensation_is_ignored() -> None:
    saga = Saga(definition(step("a"), step("b", compensation=None, max_attempts=2)))
    saga.succeed("a")
    saga.time_out("b")
    saga.fire("b")
    saga.fail("b", retryable=False)
    saga.succeed("a", kind=Kind.COMPENSATION)
    before = saga.state
    decision = saga.succeed("b", attempt=1)
    assert_ignored(decision)
    assert types(decision) == [H.REPLY_IGNORED]
    assert saga.state == before


def test_duplicate_late_success_is_recorded_as_ignored() -> None:
    """A second copy of a late success must not be recorded as a second step_succeeded."""
    saga = Saga(definition(step("a"), step("b"), step("c", max_attempts=2)))
    saga.succeed("a")
    saga.succeed("b")
    saga.time_out("c")
    saga.fire("c")
    saga.fail("c", retryable=False)
    reply = saga.success("c", {"id": "C"}, attempt=1)
    saga.feed(reply)
    before = saga.state
    duplicate = saga.feed(reply)
    assert_ignored(duplicate)
    assert types(duplicate) == [H.REPLY_IGNORED]
    assert saga.state == before
    assert saga.history_types().count(H.STEP_SUCCEEDED) == 3


def test_second_late_success_from_another_attempt_is_ignored() -> None:
    saga = Saga(
        definition(
            step("a"),
            step("b", max_attempts=3, compensation_payload={"id": "${steps.b.result.id}"}),
        )
    )
    saga.succeed("a")
    saga.time_out("b")
    saga.fire("b")
    saga.time_out("b")
    saga.fire("b")
    saga.fail("b", retryable=False)  # attempt 3; a's compensation is in flight
    saga.succeed("b", {"id": "one"}, attempt=1)
    before = saga.state
    second = saga.succeed("b", {"id": "two"}, attempt=2)
    assert_ignored(second)
    assert types(second) == [H.REPLY_IGNORED]
    assert saga.state == before
    saga.succeed("a", kind=Kind.COMPENSATION)
    (command,) = sends(saga.last)
    assert (command.step, command.payload) == ("b", {"id": "one"})
