"""Rules of the richer definition language: ``when:`` conditions, step kinds (pivot and
retriable), per-step retry codes and ``on_failure: fail``, and the operator actions on a
saga that stopped going forward."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.core.events import (
    DeadlinePassed,
    Migrate,
    OperatorAbort,
    OperatorResolve,
    OperatorRetry,
)
from orchestrator.core.state import HistoryType, Kind, SagaStatus, StepStatus
from orchestrator.definitions.model import OnFailure, SagaDefinition, StepKind

from .builders import Saga, backoff, definition, records, sends, step, types

H = HistoryType
NO_WAIT = backoff(0.0, 1.0, 0.0)


def _shop(**overrides: object) -> Saga:
    """reserve (compensatable) -> charge (pivot) -> ship (retriable), with overrides."""
    steps = [
        step("reserve", retry_backoff=NO_WAIT),
        step("charge", compensation=None, kind=StepKind.PIVOT, retry_backoff=NO_WAIT),
        step("ship", compensation=None, kind=StepKind.RETRIABLE, retry_backoff=NO_WAIT),
    ]
    for name, value in overrides.items():
        index = [s.name for s in steps].index(name)
        steps[index] = value  # type: ignore[call-overload]
    return Saga(definition(*steps), {"express": True, "total": 40})


# -- conditions ------------------------------------------------------------------------------


def test_a_false_condition_skips_the_step_records_why_and_sends_the_next() -> None:
    saga = Saga(
        definition(
            step("a"),
            step("gift_wrap", when="${input.gift} == true"),
            step("c"),
        ),
        {"gift": False},
    )
    decision = saga.succeed("a")
    assert saga.of("gift_wrap").status is StepStatus.SKIPPED
    skipped = [r for r in records(decision) if r.type is H.STEP_SKIPPED]
    assert [(r.step, r.detail) for r in skipped] == [
        ("gift_wrap", {"when": "${input.gift} == true"})
    ]
    assert [s.step for s in sends(decision)] == ["c"]
    saga.succeed("c")
    assert saga.status() is SagaStatus.COMPLETED


def test_a_skipped_step_is_never_compensated() -> None:
    saga = Saga(
        definition(step("a"), step("b", when="${input.x} > 10"), step("c")),
        {"x": 3},
    )
    saga.succeed("a")
    decision = saga.fail("c", retryable=False)
    assert [(s.step, s.kind) for s in sends(decision)] == [("a", Kind.COMPENSATION)]
    saga.succeed("a", kind=Kind.COMPENSATION)
    assert saga.status() is SagaStatus.COMPENSATED
    assert saga.of("b").status is StepStatus.SKIPPED


def test_a_condition_can_read_an_earlier_result() -> None:
    saga = Saga(definition(step("a"), step("b", when="${steps.a.result.approved}")), {})
    saga.succeed("a", {"approved": True})
    assert saga.of("b").status is StepStatus.RUNNING


def test_a_condition_that_cannot_be_evaluated_fails_the_step_and_compensates() -> None:
    saga = Saga(definition(step("a"), step("b", when="${input.x} < 'ten'")), {"x": 3})
    decision = saga.succeed("a")
    assert saga.of("b").status is StepStatus.FAILED
    error = saga.of("b").error
    assert error is not None
    assert error.code == "bad_condition"
    assert 'cannot compare 3 < "ten"' in error.message
    assert [(s.step, s.kind) for s in sends(decision)] == [("a", Kind.COMPENSATION)]


# -- pivot and retriable steps ---------------------------------------------------------------


def test_a_retriable_step_is_retried_past_max_attempts_until_it_succeeds() -> None:
    saga = _shop()
    saga.succeed("reserve")
    saga.succeed("charge")
    for attempt in range(1, 8):  # max_attempts is 3
        assert saga.of("ship").attempts == attempt
        saga.fire("ship")  # no reply: timed out, sent again at once
    saga.succeed("ship")
    assert saga.status() is SagaStatus.COMPLETED


def test_a_permanent_failure_past_the_pivot_stops_for_an_operator_without_compensating() -> None:
    saga = _shop()
    saga.succeed("reserve")
    saga.succeed("charge")
    decision = saga.fail("ship", retryable=False, code="address_unknown")
    assert saga.status() is SagaStatus.FAILED
    assert not sends(decision)
    (failed,) = [r for r in records(decision) if r.type is H.FAILED]
    assert failed.detail["why"] == "the saga is past its pivot 'charge' and cannot compensate"
    assert failed.detail["code"] == "address_unknown"


def test_past_the_pivot_an_abort_is_refused_and_a_retry_sends_under_a_fresh_key() -> None:
    saga = _shop()
    saga.succeed("reserve")
    saga.succeed("charge")
    saga.fail("ship", retryable=False)
    refused = saga.feed(OperatorAbort(reason="customer cancelled"))
    assert refused.refusal is not None
    assert "past its pivot 'charge'" in refused.refusal
    assert not refused.changed
    decision = saga.feed(OperatorRetry(reason="address fixed"))
    (command,) = sends(decision)
    assert (command.step, command.attempt) == ("ship", 1)
    assert command.idempotency_key == "saga-1:ship:action:r1"
    assert saga.status() is SagaStatus.RUNNING
    saga.succeed("ship")
    assert saga.status() is SagaStatus.COMPLETED


def test_resolving_a_saga_stopped_past_the_pivot_completes_it() -> None:
    saga = _shop()
    saga.succeed("reserve")
    saga.succeed("charge")
    saga.fail("ship", retryable=False)
    decision = saga.feed(OperatorResolve(reason="shipped by hand"))
    assert saga.status() is SagaStatus.COMPLETED
    assert types(decision) == [H.OPERATOR_RESOLVE, H.COMPLETED]


def test_a_failing_pivot_compensates_what_came_before_it() -> None:
    saga = _shop()
    saga.succeed("reserve")
    decision = saga.fail("charge", retryable=False, code="card_declined")
    assert [(s.step, s.kind) for s in sends(decision)] == [("reserve", Kind.COMPENSATION)]
    assert saga.status() is SagaStatus.COMPENSATING


def test_a_late_success_for_the_step_a_saga_stopped_on_resumes_it() -> None:
    saga = Saga(
        definition(
            step("reserve"),
            step("charge", compensation=None, kind=StepKind.PIVOT),
            step("ship", compensation=None, on_failure=OnFailure.FAIL, max_attempts=1),
        ),
        {},
    )
    saga.succeed("reserve")
    saga.succeed("charge")
    saga.fire("ship")  # the only attempt timed out: failed for good, stopped
    assert saga.status() is SagaStatus.FAILED
    decision = saga.succeed("ship", {"tracking": "T1"}, attempt=1)
    assert saga.status() is SagaStatus.COMPLETED
    assert saga.of("ship").result == {"tracking": "T1"}
    succeeded = [r for r in records(decision) if r.type is H.STEP_SUCCEEDED]
    assert succeeded[0].detail == {"late": True}


# -- per-step failure policy ---------------------------------------------------------------


def test_retry_never_fails_the_step_for_good_on_that_code() -> None:
    saga = Saga(definition(step("a"), step("b", retry_never=("rate_limited",))), {})
    saga.succeed("a")
    decision = saga.fail("b", retryable=True, code="rate_limited")
    assert saga.of("b").attempts == 1
    assert [(s.step, s.kind) for s in sends(decision)] == [("b", Kind.COMPENSATION)], (
        "a retryable failure may still run later, so the step is compensated too"
    )


def test_retry_never_timeout_gives_up_on_the_first_timeout() -> None:
    saga = Saga(definition(step("a", retry_never=("timeout",))), {})
    decision = saga.fire("a")
    assert types(decision)[0] is H.STEP_TIMED_OUT
    assert saga.of("a").status is not StepStatus.RUNNING


def test_retry_on_retries_only_the_codes_it_lists() -> None:
    saga = Saga(definition(step("a", retry_backoff=NO_WAIT, retry_on=("busy",))), {})
    saga.fail("a", retryable=True, code="busy")
    assert saga.of("a").attempts == 2
    saga.fail("a", retryable=True, code="disk_full")
    assert saga.of("a").status is not StepStatus.RUNNING


def test_on_failure_fail_stops_for_an_operator_who_may_compensate() -> None:
    saga = Saga(definition(step("a"), step("b", on_failure=OnFailure.FAIL)), {})
    saga.succeed("a")
    decision = saga.fail("b", retryable=False, code="needs_review")
    assert saga.status() is SagaStatus.FAILED
    assert not sends(decision)
    (failed,) = [r for r in records(decision) if r.type is H.FAILED]
    assert failed.detail["why"] == "step 'b' has on_failure: fail"
    decision = saga.feed(OperatorAbort(reason="refund the customer"))
    assert [(s.step, s.kind) for s in sends(decision)] == [("a", Kind.COMPENSATION)]
    assert saga.status() is SagaStatus.COMPENSATING


def test_a_retry_of_a_step_that_was_never_sent_is_refused() -> None:
    saga = Saga(
        definition(step("a", payload={"x": "${input.missing}"}, on_failure=OnFailure.FAIL)), {}
    )
    assert saga.status() is SagaStatus.FAILED
    refused = saga.feed(OperatorRetry())
    assert refused.refusal is not None
    assert "bad_reference" in refused.refusal


# -- parallel groups -------------------------------------------------------------------------


def _trip(**deadline: float) -> Saga:
    """hold -> [flight | hotel | car] -> pay (the pivot)."""
    return Saga(
        definition(
            step("hold"),
            step("flight", group=1, retry_backoff=backoff(1.0, 1.0, 1.0)),
            step("hotel", group=1),
            step("car", group=1, when="${input.car}"),
            step(
                "pay",
                compensation=None,
                kind=StepKind.PIVOT,
                payload={"f": "${steps.flight.result.id}"},
            ),
            deadline=deadline.get("deadline"),
        ),
        {"car": True},
    )


def test_a_group_sends_its_steps_at_once_and_goes_on_when_all_succeeded() -> None:
    saga = _trip()
    decision = saga.succeed("hold")
    assert [s.step for s in sends(decision)] == ["flight", "hotel", "car"]
    saga.succeed("hotel")
    saga.succeed("flight", {"id": "F1"})
    assert saga.of("pay").status is StepStatus.PENDING
    decision = saga.succeed("car")
    (command,) = sends(decision)
    assert (command.step, command.payload) == ("pay", {"f": "F1"})


def test_a_failing_member_waits_for_the_others_then_compensates_newest_first() -> None:
    saga = _trip()
    saga.succeed("hold")
    saga.succeed("flight")
    saga.succeed("car")
    decision = saga.fail("hotel", retryable=False)
    # hotel failed, nothing in flight: car (finished after flight) is undone first.
    assert [(s.step, s.kind) for s in sends(decision)] == [("car", Kind.COMPENSATION)]
    saga.succeed("car", kind=Kind.COMPENSATION)
    assert saga.of("flight").status is StepStatus.COMPENSATING
    saga.succeed("flight", kind=Kind.COMPENSATION)
    assert saga.of("hold").status is StepStatus.COMPENSATING


def test_members_still_in_flight_are_awaited_before_compensating() -> None:
    saga = _trip()
    saga.succeed("hold")
    decision = saga.fail("hotel", retryable=False)
    assert saga.status() is SagaStatus.COMPENSATING
    assert not sends(decision), "flight and car are still in flight"
    saga.succeed("car")
    assert saga.of("car").status is StepStatus.SUCCEEDED
    decision = saga.fire("flight")  # its attempt timed out: no retry while compensating
    assert saga.of("flight").status is StepStatus.COMPENSATING  # outcome unknown: undone
    assert [(s.step, s.kind) for s in sends(decision)] == [("flight", Kind.COMPENSATION)]


def test_a_member_waiting_out_its_backoff_is_not_sent_again_once_compensating() -> None:
    saga = _trip()
    saga.succeed("hold")
    saga.fail("flight", retryable=True)  # waits 1s before its next attempt
    saga.succeed("car")
    decision = saga.fail("hotel", retryable=False)
    cancelled = saga.of("flight")
    assert cancelled.error is not None
    assert cancelled.error.code == "cancelled"
    assert not [s for s in sends(decision) if s.kind is Kind.ACTION]
    assert [(s.step, s.kind) for s in sends(decision)] == [("flight", Kind.COMPENSATION)]


# -- the saga's deadline ---------------------------------------------------------------------


def test_a_passed_deadline_compensates_and_counts_steps_in_flight_as_timed_out() -> None:
    saga = _trip(deadline=60)
    assert saga.state.deadline == saga.now + timedelta(seconds=60)
    saga.succeed("hold")
    saga.succeed("hotel")
    saga.advance(61)
    decision = saga.feed(DeadlinePassed())
    assert types(decision)[0] is H.DEADLINE_PASSED
    assert saga.status() is SagaStatus.COMPENSATING
    assert saga.state.deadline is None
    error = saga.state.error
    assert error is not None
    assert error.code == "deadline"
    assert error.message == "the saga did not finish within its deadline of 60s"
    flight = saga.of("flight")
    assert flight.effect_possible, "sent and never answered: it is compensated too"


def test_a_deadline_past_the_pivot_stops_the_saga_for_an_operator() -> None:
    saga = Saga(
        definition(
            step("charge", compensation=None, kind=StepKind.PIVOT),
            step("ship", compensation=None, kind=StepKind.RETRIABLE),
            deadline=30,
        ),
        {},
    )
    saga.succeed("charge")
    saga.advance(31)
    decision = saga.feed(DeadlinePassed())
    assert saga.status() is SagaStatus.FAILED
    assert not sends(decision)
    assert saga.of("ship").status is StepStatus.RUNNING, "its attempt is awaited"
    saga.succeed("ship")
    assert saga.status() is SagaStatus.FAILED, "the operator decides"
    saga.feed(OperatorRetry())
    assert saga.status() is SagaStatus.COMPLETED


def test_a_deadline_event_before_the_deadline_or_after_the_end_changes_nothing() -> None:
    saga = _trip(deadline=60)
    assert not saga.feed(DeadlinePassed()).changed
    saga.succeed("hold")
    for name in ("flight", "hotel", "car", "pay"):
        saga.succeed(name, {"id": "x"})
    assert saga.status() is SagaStatus.COMPLETED
    saga.advance(100)
    assert not saga.feed(DeadlinePassed()).changed


# -- moving a saga to another version ---------------------------------------------------------


def _versions() -> tuple[SagaDefinition, SagaDefinition]:
    v1 = definition(step("a"), step("b"), step("c"))
    v2 = v1.model_copy(update={"version": 2, "steps": (*v1.steps, step("d"))})
    return v1, v2


def test_a_running_saga_moves_to_a_version_its_steps_begin() -> None:
    v1, v2 = _versions()
    saga = Saga(v1, {})
    saga.succeed("a")
    decision = saga.feed(Migrate(v2, reason="d added"))
    assert decision.refusal is None
    assert saga.state.definition.version == 2
    assert [s.status for s in saga.state.steps] == [
        StepStatus.SUCCEEDED,
        StepStatus.RUNNING,
        StepStatus.PENDING,
        StepStatus.PENDING,
    ]
    (migrated,) = records(decision)
    assert migrated.type is H.MIGRATED
    assert migrated.detail == {"from_version": 1, "to_version": 2, "reason": "d added"}
    saga.succeed("b")
    saga.succeed("c")
    assert [s.step for s in sends(saga.last)] == ["d"]


def test_a_version_that_does_not_begin_with_the_steps_run_is_refused() -> None:
    v1, _ = _versions()
    other = v1.model_copy(update={"version": 3, "steps": (step("x"), *v1.steps)})
    saga = Saga(v1, {})
    refused = saga.feed(Migrate(other))
    assert refused.refusal == (
        "version 3 does not begin with the steps saga saga-1 has run (a) but with (x); "
        "map renamed steps with --map OLD=NEW, or leave the saga on its version"
    )
    assert not refused.changed


def test_a_renamed_step_that_ran_keeps_its_idempotency_keys() -> None:
    v1, _ = _versions()
    renamed = v1.model_copy(update={"version": 2, "steps": (step("reserve"), *v1.steps[1:])})
    saga = Saga(v1, {})
    saga.succeed("a")
    key_before = saga.state.action_key(0)
    decision = saga.feed(Migrate(renamed, {"a": "reserve"}))
    assert decision.refusal is None
    assert saga.state.steps[0].name == "reserve"
    assert saga.state.action_key(0) == key_before == "saga-1:a:action"
    decision = saga.fail("b", retryable=False)
    (command,) = sends(decision)
    assert (command.step, command.idempotency_key) == ("reserve", "saga-1:a:compensation")


def test_only_a_running_or_stopped_saga_moves_and_never_to_its_own_version() -> None:
    v1, v2 = _versions()
    saga = Saga(v1, {})
    assert saga.feed(Migrate(v1)).refusal == "saga saga-1 is already on version 1"
    saga.fail("a", retryable=False)
    assert saga.status() is SagaStatus.COMPENSATED
    refused = saga.feed(Migrate(v2)).refusal
    assert refused is not None
    assert "only a running saga, or one stopped going forward" in refused


def test_a_step_added_to_the_group_under_way_is_sent_at_once() -> None:
    v1 = definition(step("a", group=1), step("b", group=1), step("c"))
    v2 = v1.model_copy(
        update={"version": 2, "steps": (*v1.steps[:2], step("n", group=1), v1.steps[2])}
    )
    saga = Saga(v1, {})
    decision = saga.feed(Migrate(v2))
    assert [s.step for s in sends(decision)] == ["n"]


def test_when_the_step_a_saga_stopped_on_succeeds_late_another_failure_decides() -> None:
    saga = Saga(
        definition(
            step("a"),
            step("b", group=1, on_failure=OnFailure.FAIL, max_attempts=1),
            step("c", group=1, max_attempts=1),
        ),
        {},
    )
    saga.succeed("a")
    saga.fire("b")  # b timed out for good: its on_failure stops the saga
    assert saga.status() is SagaStatus.FAILED
    saga.fail("c", retryable=False)  # awaited, then failed: still the operator's call
    decision = saga.succeed("b", attempt=1)  # b did succeed: c's failure now compensates
    assert saga.status() is SagaStatus.COMPENSATING
    assert [(s.step, s.kind) for s in sends(decision)] == [("b", Kind.COMPENSATION)]
