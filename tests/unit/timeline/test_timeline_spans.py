"""`saga trace`: the timeline built from a saga's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.store import HistoryEntry
from orchestrator.timeline import spans

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _history(
    *events: tuple[float, str, str | None, int | None, dict[str, Any]],
) -> list[HistoryEntry]:
    return [
        HistoryEntry(seq, T0 + timedelta(milliseconds=ms), kind, step, attempt, detail)
        for seq, (ms, kind, step, attempt, detail) in enumerate(events, start=1)
    ]


def test_a_compensated_saga_has_one_span_per_attempt_with_outcomes() -> None:
    history = _history(
        (0, "started", None, None, {}),
        (0, "step_sent", "reserve", 1, {}),
        (20, "step_succeeded", "reserve", 1, {}),
        (20, "step_sent", "charge", 1, {}),
        (50, "step_timed_out", "charge", 1, {"will_retry": True}),
        (60, "step_sent", "charge", 2, {}),
        (70, "step_failed", "charge", 2, {"code": "card_declined", "message": "declined"}),
        (70, "compensation_sent", "reserve", 1, {}),
        (90, "compensation_succeeded", "reserve", 1, {}),
        (90, "compensated", None, None, {}),
        (95, "reply_ignored", "charge", 1, {"reason": "late"}),
    )
    found = spans(history)
    assert [(s.step, s.kind, s.attempt, s.outcome, s.duration_ms) for s in found] == [
        ("reserve", "action", 1, "succeeded", 20.0),
        ("charge", "action", 1, "timed out", 30.0),
        ("charge", "action", 2, "failed", 10.0),
        ("reserve", "compensation", 1, "succeeded", 20.0),
    ]
    assert found[2].detail == "card_declined: declined"
    assert found[0].to_json()["started_at"] == T0.isoformat()


def test_an_attempt_in_flight_has_no_end_and_an_abort_ends_it() -> None:
    running = spans(_history((0, "step_sent", "a", 1, {})))
    assert running[0].ended_at is None
    assert running[0].duration_ms is None
    aborted = spans(
        _history((0, "step_sent", "a", 1, {}), (40, "operator_abort", "a", 1, {"reason": "x"}))
    )
    assert aborted[0].outcome == "aborted"
    assert aborted[0].duration_ms == 40.0
