"""Events that must change nothing: duplicates, stale or early timers, unknown replies.

:func:`noise_events` draws a few such events for the state a saga is in; the world feeds
them and checks that each one is ignored (same state, nothing sent, at most a
``reply_ignored`` record).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from hypothesis import strategies as st

from orchestrator.core.events import Event, ReplyFailed, ReplySucceeded, TimerFired
from orchestrator.core.state import DeadlinePurpose, Kind, SagaState, StepState

from .builders import current_attempt

__all__ = ["noise_events"]

Reply = ReplySucceeded | ReplyFailed


def noise_events(
    data: st.DataObject, state: SagaState, now: datetime, delivered: Sequence[Reply]
) -> list[Event]:
    """A few events the saga in ``state`` must ignore at ``now``."""
    kind = data.draw(st.integers(0, 6), label="noise kind")
    if kind == 0 and delivered:
        # Mostly the newest reply: a duplicate right after its first delivery.
        index = data.draw(st.integers(-3, len(delivered) - 1), label="duplicate of")
        return [delivered[max(index, -1)]]
    if kind == 1:
        return _random_timer(data, state, now)
    if kind == 2:
        return _near_miss_timer(data, state, now)
    if kind == 3:
        return [
            ReplySucceeded("ghost", Kind.ACTION, 1, f"{state.saga_id}:ghost:action", {}),
            ReplyFailed("ghost", Kind.COMPENSATION, 1, f"{state.saga_id}:ghost:x", "x", "x", True),
        ]
    if kind == 4:
        return _wrong_key(data, state)
    if kind == 5:
        return _old_failure(data, state)
    return _future_reply(data, state)


def _waiting(state: SagaState) -> tuple[StepState, Kind, DeadlinePurpose] | None:
    step = state.waiting_on()
    if step is None or step.deadline is None:
        return None
    return step, step.deadline.kind, step.deadline.purpose


def _key(state: SagaState, name: str, kind: Kind) -> str:
    index = state.definition.step_index(name)
    return state.action_key(index) if kind is Kind.ACTION else state.compensation_key(index)


def _live(state: SagaState, timer: TimerFired, now: datetime) -> bool:
    found = state.step(timer.step)
    if found is None:
        return False
    step = found[1]
    deadline = step.deadline
    return (
        deadline is not None
        and deadline.kind is timer.kind
        and deadline.purpose is timer.purpose
        and current_attempt(step, timer.kind) == timer.attempt
        and deadline.at <= now
    )


def _random_timer(data: st.DataObject, state: SagaState, now: datetime) -> list[Event]:
    names = [s.name for s in state.steps]
    timer = TimerFired(
        data.draw(st.sampled_from([*names, "ghost"]), label="timer step"),
        data.draw(st.sampled_from(list(Kind)), label="timer kind"),
        data.draw(st.integers(0, 5), label="timer attempt"),
        data.draw(st.sampled_from(list(DeadlinePurpose)), label="timer purpose"),
    )
    return [] if _live(state, timer, now) else [timer]


def _near_miss_timer(data: st.DataObject, state: SagaState, now: datetime) -> list[Event]:
    """The current deadline's timer, but early, for the previous attempt, or the other purpose."""
    waiting = _waiting(state)
    if waiting is None:
        return []
    step, kind, purpose = waiting
    attempt = current_attempt(step, kind)
    other = DeadlinePurpose.RETRY if purpose is DeadlinePurpose.REPLY else DeadlinePurpose.REPLY
    timers = [
        TimerFired(step.name, kind, attempt - 1, purpose),
        TimerFired(step.name, kind, attempt, other),
    ]
    assert step.deadline is not None
    if step.deadline.at > now:
        timers.append(TimerFired(step.name, kind, attempt, purpose))
    return [data.draw(st.sampled_from(timers), label="near-miss timer")]


def _wrong_key(data: st.DataObject, state: SagaState) -> list[Event]:
    names = [s.name for s in state.steps]
    name = data.draw(st.sampled_from(names), label="wrong key step")
    bogus = f"other-saga:{name}:action"
    return [
        ReplySucceeded(name, Kind.ACTION, 1, bogus, {"v": "bogus"}),
        ReplyFailed(name, Kind.COMPENSATION, 1, bogus, "x", "x", False),
    ]


def _old_failure(data: st.DataObject, state: SagaState) -> list[Event]:
    """Failures for an attempt before the one in flight."""
    waiting = _waiting(state)
    if waiting is None:
        return []
    step, kind, _ = waiting
    current = current_attempt(step, kind)
    if current < 2:
        return []
    attempt = data.draw(st.integers(1, current - 1), label="old attempt")
    key = _key(state, step.name, kind)
    return [
        ReplyFailed(step.name, kind, attempt, key, "old", "old", retryable)
        for retryable in (True, False)
    ]


def _future_reply(data: st.DataObject, state: SagaState) -> list[Event]:
    """Replies for an attempt that was never sent (mostly on the step the saga waits on)."""
    waiting = _waiting(state)
    if waiting is not None and data.draw(st.booleans(), label="future on the waiting step"):
        name, kind = waiting[0].name, waiting[1]
    else:
        name = data.draw(st.sampled_from([s.name for s in state.steps]), label="future step")
        kind = data.draw(st.sampled_from(list(Kind)), label="future kind")
    step = state.steps[state.definition.step_index(name)]
    attempt = current_attempt(step, kind) + 1
    key = _key(state, name, kind)
    return [
        ReplySucceeded(name, kind, attempt, key, {"v": "future"}),
        ReplyFailed(name, kind, attempt, key, "future", "future", False),
    ]
