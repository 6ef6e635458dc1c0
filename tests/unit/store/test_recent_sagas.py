"""What a store remembers of the sagas it wrote last: bounded, advanced by each write,
nothing kept of sagas that are over."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from orchestrator.core.effects import Record
from orchestrator.core.state import HistoryType, SagaState, SagaStatus
from orchestrator.definitions.model import SagaDefinition
from orchestrator.store import NewSaga, Transition
from orchestrator.stores.recent import RecentSagas

T0 = datetime(2026, 5, 1, tzinfo=UTC)
DEFINITION = SagaDefinition.model_validate(
    {"name": "order", "version": 1, "steps": [{"name": "a", "participant": "p", "command": "a"}]}
)


def _new(saga_id: str) -> NewSaga:
    return NewSaga(
        state=SagaState.new(saga_id, DEFINITION, {}),
        idempotency_key=f"key-{saga_id}",
        trace_context=None,
        history=[Record(HistoryType.STARTED), Record(HistoryType.STEP_SENT, step="a")],
        outbox=[],
        inbox=("orchestrator.start", f"m-{saga_id}"),
        now=T0,
    )


def test_a_created_saga_is_remembered_at_version_one() -> None:
    recent = RecentSagas()
    recent.created(_new("s1"))
    snapshot = recent.get("s1")
    assert snapshot is not None
    assert snapshot.record is not None
    assert (snapshot.record.version, snapshot.last_seq, snapshot.processed) == (1, 2, False)
    assert snapshot.record.idempotency_key == "key-s1"
    assert recent.get("s2") is None


def test_each_write_moves_version_history_and_time() -> None:
    recent = RecentSagas()
    recent.created(_new("s1"))
    before = recent.get("s1")
    assert before is not None
    assert before.record is not None
    later = T0 + timedelta(seconds=5)
    changed = replace(before.record.state, output={"done": False})
    recent.applied(
        Transition(before.record, changed, [Record(HistoryType.REPLY_IGNORED)], [], later, 2)
    )
    after = recent.get("s1")
    assert after is not None
    assert after.record is not None
    assert (after.record.version, after.last_seq, after.record.updated_at) == (2, 3, later)
    assert after.record.state == changed

    # A write that changes nothing moves the version, not the time.
    recent.applied(Transition(after.record, changed, [], [], later + timedelta(1), 3))
    again = recent.get("s1")
    assert again is not None
    assert again.record is not None
    assert (again.record.version, again.last_seq, again.record.updated_at) == (3, 3, later)


def test_a_saga_that_is_over_is_forgotten() -> None:
    recent = RecentSagas()
    recent.created(_new("s1"))
    before = recent.get("s1")
    assert before is not None
    assert before.record is not None
    done = replace(before.record.state, status=SagaStatus.COMPLETED)
    recent.applied(Transition(before.record, done, [], [], T0, 2))
    assert recent.get("s1") is None
    assert len(recent) == 0


def test_the_least_recently_used_goes_first() -> None:
    recent = RecentSagas(size=2)
    recent.created(_new("s1"))
    recent.created(_new("s2"))
    assert recent.get("s1") is not None  # now s2 is the least recently used
    recent.created(_new("s3"))
    assert recent.get("s2") is None
    assert recent.get("s1") is not None
    assert recent.get("s3") is not None
    recent.forget("s1")
    assert len(recent) == 1
