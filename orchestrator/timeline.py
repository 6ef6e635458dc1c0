"""A saga's timeline from its history (``saga trace``): one span per attempt of each action and
compensation, with when it was sent, when it ended and how; useful without Jaeger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orchestrator.core.state import JSON
from orchestrator.store import HistoryEntry

_OPENS = {"step_sent": "action", "compensation_sent": "compensation"}
_CLOSES = {
    "step_succeeded": ("action", "succeeded"),
    "step_failed": ("action", "failed"),
    "step_timed_out": ("action", "timed out"),
    "compensation_succeeded": ("compensation", "succeeded"),
    "compensation_failed": ("compensation", "failed"),
}


@dataclass
class Span:
    """One attempt of one step's action or compensation."""

    step: str
    kind: str
    attempt: int
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str = "in flight"
    detail: str = ""

    def to_json(self) -> dict[str, JSON]:
        """The span as ``saga trace --json`` shows it."""
        return {
            "step": self.step,
            "kind": self.kind,
            "attempt": self.attempt,
            "started_at": self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "detail": self.detail,
        }

    @property
    def duration_ms(self) -> float | None:
        """How long the attempt took, if it ended."""
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.started_at).total_seconds() * 1000, 1)


def spans(history: Sequence[HistoryEntry]) -> list[Span]:
    """The attempts in the order they were sent; an attempt abandoned by an abort ends there."""
    result: list[Span] = []
    open_spans: dict[tuple[str, str, int], Span] = {}
    for entry in history:
        if entry.step is None:
            continue
        if entry.type in _OPENS and entry.attempt is not None:
            span = Span(entry.step, _OPENS[entry.type], entry.attempt, entry.at)
            open_spans[(span.step, span.kind, span.attempt)] = span
            result.append(span)
        elif entry.type in _CLOSES and entry.attempt is not None:
            kind, outcome = _CLOSES[entry.type]
            span_or_none = open_spans.pop((entry.step, kind, entry.attempt), None)
            if span_or_none is not None:
                span_or_none.ended_at = entry.at
                span_or_none.outcome = outcome
                span_or_none.detail = _describe(entry.detail)
        elif entry.type == "operator_abort":
            for key, span in list(open_spans.items()):
                if key[0] == entry.step:
                    span.ended_at, span.outcome = entry.at, "aborted"
                    del open_spans[key]
    return result


def _describe(detail: dict[str, JSON]) -> str:
    code = detail.get("code")
    if code is None:
        return ""
    message = detail.get("message") or ""
    return f"{code}: {message}" if message else str(code)
