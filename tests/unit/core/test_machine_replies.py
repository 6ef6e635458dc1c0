"""Rules for duplicate, late, stale and unknown replies and timers (PRODUCT.md "Semantics")."""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.core.events import (
    Event,
    OperatorAbort,
    OperatorResolve,
    OperatorRetry,
    ReplyFailed,
    ReplySucceeded,
    TimerFired,
)
from orchestrator.core.machine import decide
from orchestrator.core.state import (
    DeadlinePurpose,
    HistoryType,
    Kind,
    SagaStatus,
    StepStatus,
)

from .builders import (
    Saga,
    assert_ignored,
    definition,
    sends,
    step,
    types,
)

H = HistoryType


def test_duplicate_success_is_ignored_and_changes_nothing() -> None:
    saga = Saga(definition(step("a"), step("b")))
    reply = saga.success("a", {"id": 1})
    saga.feed(reply)
    before = saga.state
    decision = saga.feed(reply)
    assert_ignored(decision)
    assert types(decision) == [H.REPLY_IGNORED]
    assert decision.state == before
    assert len([s for s in saga.all_sends() if s.step == "b"]) == 1


def test_success_from_attempt_one_while_attempt_two_in_flight_is_accepted() -> None:
    saga = Saga(definition(step("a", max_attempts=3), step("b")))
    saga.time_out("a")
    saga.fire("a")
    assert saga.of("a").attempts == 2
    decision = saga.succeed("a", {"v": 1}, attempt=1)
    assert types(decision) == [H.STEP_SUCCEEDED, H.STEP_SENT]
    assert saga.of("a").status is StepStatus.SUCCEEDED
    assert saga.of("a").result == {"v": 1}
    assert [s.step for s in sends(decision)] == ["b"]


def test_success_during_backoff_after_timeout_is_accepted_and_retry_timer_goes_stale() -> None:
    saga = Saga(definition(step("a"), step("b")))
    saga.time_out("a")
    deadline = saga.of("a").deadline
    assert deadline is not None
    assert deadline.purpose is DeadlinePurpose.RETRY
    saga.succeed("a", attempt=1)
    assert saga.of("a").status is StepStatus.SUCCEEDED
    saga.now = deadline.at
    stale = saga.feed(TimerFired("a", Kind.ACTION, 1, DeadlinePurpose.RETRY))
    assert stale.changed is False
    assert stale.effects == ()


def test_failure_from_an_earlier_attempt_is_ignored() -> None:
    saga = Saga(definition(step("a", max_attempts=3)))
    saga.time_out("a")
    saga.fire("a")
    before = saga.state
    for retryable in (True, False):
        decision = saga.fail("a", retryable=retryable, attempt=1)
        assert_ignored(decision)
        assert types(decision) == [H.REPLY_IGNORED]
        assert saga.state == before


def test_duplicate_failure_during_backoff_is_ignored() -> None:
    saga = Saga(definition(step("a", max_attempts=3)))
    reply = saga.failure("a", retryable=True)
    saga.feed(reply)
    before = saga.state
    assert_ignored(saga.feed(reply))
    assert saga.state == before
    assert saga.of("a").attempts == 1


@pytest.mark.parametrize("kind", [Kind.ACTION, Kind.COMPENSATION])
def test_reply_with_wrong_idempotency_key_is_ignored(kind: Kind) -> None:
    saga = Saga(definition(step("a"), step("b")))
    name = "a"
    if kind is Kind.COMPENSATION:
        saga.succeed("a")
        saga.fail("b", retryable=False)
    before = saga.state
    wrong = f"{saga.key(name, kind)}:r7"
    for event in (
        saga.success(name, kind=kind, key=wrong),
        saga.failure(name, kind=kind, retryable=False, key=wrong),
        saga.success(name, kind=kind, key="other-saga:a:action"),
    ):
        decision = saga.feed(event)
        assert_ignored(decision)
        assert types(decision) == [H.REPLY_IGNORED]
        assert saga.state == before


def test_reply_for_unknown_step_is_ignored() -> None:
    saga = Saga(definition(step("a")))
    before = saga.state
    for event in (
        ReplySucceeded("nope", Kind.ACTION, 1, "saga-1:nope:action", {}),
        ReplyFailed("nope", Kind.COMPENSATION, 1, "saga-1:nope:compensation", "x", "y", True),
    ):
        decision = saga.feed(event)
        assert_ignored(decision)
        assert types(decision) == [H.REPLY_IGNORED]
        assert saga.state == before


@pytest.mark.parametrize("kind", [Kind.ACTION, Kind.COMPENSATION])
def test_reply_for_an_attempt_never_sent_is_ignored(kind: Kind) -> None:
    saga = Saga(definition(step("a"), step("b")))
    name = "a"
    if kind is Kind.COMPENSATION:
        saga.succeed("a")
        saga.fail("b", retryable=False)
    before = saga.state
    attempt = saga.current_attempt(name, kind) + 1
    for event in (
        saga.success(name, kind=kind, attempt=attempt),
        saga.failure(name, kind=kind, attempt=attempt, retryable=False),
        saga.success(name, kind=kind, attempt=0),
    ):
        decision = saga.feed(event)
        assert_ignored(decision)
        assert types(decision) == [H.REPLY_IGNORED]
        assert saga.state == before


def test_compensation_success_from_an_earlier_attempt_is_accepted() -> None:
    saga = Saga(definition(step("a"), step("b")))
    saga.succeed("a")
    saga.fail("b", retryable=False)
    saga.time_out("a")
    saga.fire("a")
    assert saga.current_attempt("a", Kind.COMPENSATION) == 2
    saga.succeed("a", kind=Kind.COMPENSATION, attempt=1)
    assert saga.status() is SagaStatus.COMPENSATED


def test_duplicate_compensation_success_is_ignored() -> None:
    saga = Saga(definition(step("a"), step("b"), step("c")))
    saga.succeed("a")
    saga.succeed("b")
    saga.fail("c", retryable=False)
    reply = saga.success("b", kind=Kind.COMPENSATION)
    saga.feed(reply)
    before = saga.state
    decision = saga.feed(reply)
    assert_ignored(decision)
    assert saga.state == before
    assert len([s for s in saga.all_sends() if s.step == "a"]) == 2  # action + compensation


@pytest.mark.parametrize("staleness", ["old_attempt", "wrong_purpose", "wrong_kind", "not_due"])
def test_stale_timer_is_a_no_op(staleness: str) -> None:
    saga = Saga(definition(step("a", max_attempts=3)))
    saga.time_out("a")
    saga.fire("a")  # attempt 2 in flight, reply deadline armed
    deadline = saga.of("a").deadline
    assert deadline is not None
    saga.now = deadline.at
    timer = {
        "old_attempt": TimerFired("a", Kind.ACTION, 1, DeadlinePurpose.REPLY),
        "wrong_purpose": TimerFired("a", Kind.ACTION, 2, DeadlinePurpose.RETRY),
        "wrong_kind": TimerFired("a", Kind.COMPENSATION, 2, DeadlinePurpose.REPLY),
        "not_due": TimerFired("a", Kind.ACTION, 2, DeadlinePurpose.REPLY),
    }[staleness]
    if staleness == "not_due":
        saga.now = deadline.at - timedelta(milliseconds=1)
    before = saga.state
    decision = saga.feed(timer)
    assert decision.changed is False
    assert decision.effects == ()
    assert saga.state == before


def test_timer_for_a_step_without_deadline_or_unknown_step_is_a_no_op() -> None:
    saga = Saga(definition(step("a"), step("b")))
    saga.succeed("a")
    saga.advance(3600)
    before = saga.state
    for timer in (
        TimerFired("a", Kind.ACTION, 1, DeadlinePurpose.REPLY),
        TimerFired("a", Kind.ACTION, 1, DeadlinePurpose.RETRY),
        TimerFired("nope", Kind.ACTION, 1, DeadlinePurpose.REPLY),
    ):
        decision = saga.feed(timer)
        assert (decision.changed, decision.effects) == (False, ())
        assert saga.state == before


def test_nothing_is_ever_sent_after_the_saga_completed() -> None:
    saga = Saga(definition(step("a", max_attempts=3), step("b")))
    saga.time_out("a")
    saga.fire("a")
    saga.succeed("a", attempt=2)
    saga.succeed("b")
    assert saga.status() is SagaStatus.COMPLETED
    completed = saga.state
    saga.advance(10**6)
    events: list[Event] = []
    for name in ("a", "b", "nope"):
        for kind in Kind:
            for attempt in (0, 1, 2, 3):
                key = f"saga-1:{name}:{kind.value}"
                events.append(ReplySucceeded(name, kind, attempt, key, {"x": 1}))
                for retryable in (True, False):
                    events.append(ReplyFailed(name, kind, attempt, key, "c", "m", retryable))
                for purpose in DeadlinePurpose:
                    events.append(TimerFired(name, kind, attempt, purpose))
    events += [OperatorAbort(), OperatorRetry(), OperatorResolve()]
    for event in events:
        decision = decide(completed, event, saga.now)
        assert sends(decision) == [], event
        assert decision.state == completed, event
        assert decision.changed is False, event
