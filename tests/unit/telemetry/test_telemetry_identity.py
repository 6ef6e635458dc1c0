"""SagaTrace: a saga's ids are decided once, kept with it, and the same in every process."""

from __future__ import annotations

import re

import pytest

from contracts import TraceContext
from orchestrator.telemetry.identity import SagaTrace, trace_id_of

HEX32 = re.compile(r"^[0-9a-f]{32}\Z")
HEX16 = re.compile(r"^[0-9a-f]{16}\Z")

STARTER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
STARTER_SPAN = "00f067aa0ba902b7"


def starter(flags: str = "01", tracestate: str | None = None) -> TraceContext:
    """The trace context a start request carries."""
    return TraceContext(
        traceparent=f"00-{STARTER_TRACE}-{STARTER_SPAN}-{flags}", tracestate=tracestate
    )


def assert_valid(trace: SagaTrace) -> None:
    """Ids a W3C traceparent accepts: lowercase hex, the right length, not all zero."""
    assert HEX32.match(trace.trace_id), trace.trace_id
    assert HEX16.match(trace.span_id), trace.span_id
    assert int(trace.trace_id, 16) != 0
    assert int(trace.span_id, 16) != 0
    context = trace.context_for(trace.span_id)
    assert TraceContext.from_headers(context.to_headers()) == context


def test_a_saga_without_a_starter_gets_a_random_trace_and_a_root_span_from_its_id() -> None:
    first = SagaTrace.begin("saga-1", None)
    again = SagaTrace.begin("saga-1", None)
    other = SagaTrace.begin("saga-2", None)
    assert_valid(first)
    assert first.trace_id != again.trace_id
    assert first.span_id == again.span_id
    assert first.span_id != other.span_id
    assert first.parent_span_id is None
    assert first.sampled is True
    assert first.tracestate is None


def test_a_saga_with_a_sampled_starter_continues_its_trace() -> None:
    trace = SagaTrace.begin("saga-1", starter("01", tracestate="vendor=abc"))
    assert_valid(trace)
    assert trace.trace_id == STARTER_TRACE
    assert trace.parent_span_id == STARTER_SPAN
    assert trace.span_id == SagaTrace.begin("saga-1", None).span_id
    assert trace.sampled is True
    assert trace.tracestate == "vendor=abc"


@pytest.mark.parametrize(
    ("flags", "sampled"), [("01", True), ("00", False), ("03", True), ("02", False)]
)
def test_the_sampled_flag_follows_the_starters_flags(flags: str, sampled: bool) -> None:
    trace = SagaTrace.begin("saga-1", starter(flags))
    assert trace.sampled is sampled
    expected = "01" if sampled else "00"
    assert trace.command_context("k", 1).traceparent.endswith(f"-{expected}")


@pytest.mark.parametrize(
    "trace",
    [
        SagaTrace.begin("saga-1", None),
        SagaTrace.begin("saga-1", starter("01", tracestate="a=b")),
        SagaTrace.begin("saga-1", starter("00")),
    ],
    ids=["no starter", "sampled starter with tracestate", "unsampled starter"],
)
def test_a_trace_survives_the_store(trace: SagaTrace) -> None:
    stored = trace.to_stored()
    assert all(isinstance(value, str) for value in stored.values())
    assert SagaTrace.stored("saga-1", stored) == trace


def test_a_saga_stored_without_a_trace_gets_the_same_valid_trace_in_every_process() -> None:
    trace = SagaTrace.stored("saga-1", None)
    assert_valid(trace)
    assert SagaTrace.stored("saga-1", None) == trace
    assert SagaTrace.stored("saga-1", {}) == trace
    assert trace.span_id == SagaTrace.begin("saga-1", None).span_id
    assert trace.parent_span_id is None
    assert trace.sampled is True
    other = SagaTrace.stored("saga-2", None)
    assert other.trace_id != trace.trace_id
    assert other.span_id != trace.span_id


def test_a_legacy_row_with_only_the_starters_traceparent_continues_that_trace() -> None:
    row = {"traceparent": f"00-{STARTER_TRACE}-{STARTER_SPAN}-00"}
    trace = SagaTrace.stored("saga-1", row)
    assert_valid(trace)
    assert SagaTrace.stored("saga-1", row) == trace
    assert trace.trace_id == STARTER_TRACE
    assert trace.parent_span_id == STARTER_SPAN
    assert trace.sampled is False
    assert trace.span_id == SagaTrace.begin("saga-1", None).span_id


def test_a_legacy_row_with_a_malformed_traceparent_falls_back_to_the_derived_trace() -> None:
    trace = SagaTrace.stored("saga-1", {"traceparent": "00-nonsense"})
    assert trace == SagaTrace.stored("saga-1", None)


def test_attempt_span_ids_are_stable_and_differ_per_key_attempt_and_saga() -> None:
    trace = SagaTrace.begin("saga-1", None)
    keys = ["saga-1:a:action", "saga-1:a:compensation", "saga-1:b:action", "saga-1:a:action:r1"]
    ids = {
        (key, attempt): trace.attempt_span_id(key, attempt) for key in keys for attempt in (1, 2, 3)
    }
    assert len(set(ids.values())) == len(ids)
    for span_id in ids.values():
        assert HEX16.match(span_id)
        assert span_id != trace.span_id
    # Another process rebuilds the trace from the store and derives the same ids.
    again = SagaTrace.stored("saga-1", trace.to_stored())
    assert {k: again.attempt_span_id(*k) for k in ids} == ids
    other = SagaTrace.begin("saga-2", None)
    assert other.attempt_span_id(keys[0], 1) != trace.attempt_span_id(keys[0], 1)


def test_a_commands_context_names_its_attempts_span_as_the_parent() -> None:
    trace = SagaTrace.begin("saga-1", starter("01", tracestate="vendor=abc"))
    context = trace.command_context("saga-1:a:action", 2)
    assert isinstance(context, TraceContext)
    assert TraceContext.from_headers(context.to_headers()) == context
    version, trace_id, parent, flags = context.traceparent.split("-")
    assert (version, trace_id, flags) == ("00", STARTER_TRACE, "01")
    assert parent == trace.attempt_span_id("saga-1:a:action", 2)
    assert context.tracestate == "vendor=abc"


def test_trace_id_of_reads_the_trace_id_of_a_context() -> None:
    assert trace_id_of(None) is None
    assert trace_id_of(starter()) == STARTER_TRACE
    trace = SagaTrace.begin("saga-1", None)
    assert trace_id_of(trace.command_context("k", 1)) == trace.trace_id
