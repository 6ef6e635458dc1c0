"""Telemetry.emit_span: a span exported with the ids and times a saga decided in advance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_capture import Captured, capturing, hex_parent, hex_span, hex_trace, nanos

from orchestrator.telemetry.setup import SpanRecord, Telemetry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = "00f067aa0ba902b7"
SPAN = "b7ad6b7169203331"
START = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
END = START + timedelta(seconds=2, microseconds=654321)


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capturing() as found:
        yield found


ATTEMPT = SpanRecord(
    name="step reserve",
    trace_id=TRACE,
    span_id=SPAN,
    parent_span_id=ROOT,
    start=START,
    end=END,
    attributes={"saga.step": "reserve", "saga.attempt": 2},
    kind=SpanKind.PRODUCER,
)


def record(**changes: Any) -> SpanRecord:
    """An attempt's span record, with ``changes`` applied."""
    return replace(ATTEMPT, **changes)


def test_the_exported_span_has_exactly_the_preset_ids_times_and_attributes(
    captured: Captured,
) -> None:
    captured.telemetry.emit_span(record())
    [span] = captured.finished()
    assert span.name == "step reserve"
    assert hex_trace(span) == TRACE
    assert hex_span(span) == SPAN
    assert hex_parent(span) == ROOT
    assert span.parent is not None
    assert f"{span.parent.trace_id:032x}" == TRACE
    assert span.parent.is_remote is True
    assert span.start_time == nanos(START)
    assert span.end_time == nanos(END)
    assert dict(span.attributes or {}) == {"saga.step": "reserve", "saga.attempt": 2}
    assert span.kind is SpanKind.PRODUCER
    assert span.status.status_code is StatusCode.UNSET
    assert span.context is not None
    assert span.context.trace_flags.sampled is True


def test_a_span_with_an_error_has_an_error_status_with_its_description(
    captured: Captured,
) -> None:
    captured.telemetry.emit_span(record(error="declined: card declined"))
    [span] = captured.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "declined: card declined"


def test_a_root_record_keeps_the_preset_trace_id(captured: Captured) -> None:
    captured.telemetry.emit_span(
        record(name="saga checkout", span_id=ROOT, parent_span_id=None, kind=SpanKind.INTERNAL)
    )
    [span] = captured.finished()
    assert span.parent is None
    assert hex_trace(span) == TRACE
    assert hex_span(span) == ROOT


def test_events_keep_their_times_and_an_end_before_the_start_is_clamped(
    captured: Captured,
) -> None:
    at = START + timedelta(milliseconds=5)
    captured.telemetry.emit_span(
        record(end=START - timedelta(seconds=1), events=[("retry", at, {"attempt": 2})])
    )
    [span] = captured.finished()
    assert span.end_time == span.start_time == nanos(START)
    [event] = span.events
    assert event.name == "retry"
    assert event.timestamp == nanos(at)
    assert dict(event.attributes or {}) == {"attempt": 2}


def test_an_unsampled_saga_span_is_not_exported(captured: Captured) -> None:
    captured.telemetry.emit_span(record(sampled=False))
    assert captured.finished() == []


def test_spans_started_normally_still_get_random_ids(captured: Captured) -> None:
    tracer = captured.telemetry.tracer
    assert tracer is not None
    captured.telemetry.emit_span(record())
    first = tracer.start_span("own work")
    first.end()
    second = tracer.start_span("more work")
    second.end()
    emitted, *own = captured.finished()
    assert hex_span(emitted) == SPAN
    assert len(own) == 2
    for span in own:
        assert hex_trace(span) != TRACE
        assert hex_span(span) not in (SPAN, ROOT)
        assert span.parent is None
    assert hex_trace(own[0]) != hex_trace(own[1])
    assert hex_span(own[0]) != hex_span(own[1])


def test_a_child_of_an_emitted_spans_context_gets_a_random_span_id_in_its_trace(
    captured: Captured,
) -> None:
    tracer = captured.telemetry.tracer
    assert tracer is not None
    captured.telemetry.emit_span(record())
    [emitted] = captured.finished()
    assert emitted.context is not None
    parent = trace_api.set_span_in_context(trace_api.NonRecordingSpan(emitted.context))
    tracer.start_span("participant work", context=parent).end()
    child = captured.finished()[-1]
    assert hex_trace(child) == TRACE
    assert hex_parent(child) == SPAN
    assert hex_span(child) != SPAN


def test_telemetry_off_emits_nothing_and_does_not_raise() -> None:
    telemetry = Telemetry.off()
    assert telemetry.tracing is False
    assert telemetry.measuring is False
    assert telemetry.tracer is None
    telemetry.emit_span(record())
    telemetry.emit_span(record(error="boom", parent_span_id=None))
    telemetry.meter.create_counter("anything").add(1)
    telemetry.shutdown()


def test_a_telemetry_with_providers_reports_itself_on(captured: Captured) -> None:
    assert captured.telemetry.tracing is True
    assert captured.telemetry.measuring is True
