"""ParticipantTelemetry: a participant's spans continue the trace its commands carry."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_capture import Captured, capturing, counter, hex_parent, hex_span, hex_trace

from contracts import StepCommand, StepReply
from orchestrator.telemetry.setup import Telemetry
from orchestrator.transport import Delivery
from participants.telemetry import ParticipantTelemetry

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


@dataclass(frozen=True)
class FakeDelivery:
    """The parts of a delivery the telemetry reads; settling it is not its business."""

    headers: Mapping[str, object] = field(default_factory=dict)
    body: bytes = b"{}"
    message_id: str | None = "m-1"
    reply_to: str | None = None
    user_id: str | None = None
    redelivered: bool = False
    queue: str = "saga.participant.shop"

    async def ack(self) -> None:
        raise AssertionError("telemetry must not settle a delivery")

    async def requeue(self) -> None:
        raise AssertionError("telemetry must not settle a delivery")

    async def dead_letter(self, reason: str) -> None:
        raise AssertionError("telemetry must not settle a delivery")


def command(**changes: Any) -> StepCommand:
    """An action command for ``reserve``, with ``changes`` applied."""
    fields: dict[str, Any] = {
        "message_id": "m-1",
        "saga_id": "saga-1",
        "saga_name": "checkout",
        "saga_version": 3,
        "step": "reserve",
        "kind": "action",
        "command": "reserve",
        "attempt": 2,
        "idempotency_key": "saga-1:reserve:action",
        "payload": {},
    }
    return StepCommand(**{**fields, **changes})


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capturing() as found:
        yield found


@pytest.fixture
def shop(captured: Captured) -> ParticipantTelemetry:
    return ParticipantTelemetry(captured.telemetry, "shop")


def _delivery(headers: Mapping[str, object]) -> Delivery:
    return FakeDelivery(headers=headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": TRACEPARENT},
        {"traceparent": TRACEPARENT.encode()},
        {"traceparent": TRACEPARENT.encode(), "tracestate": b"vendor=abc"},
    ],
    ids=["str", "bytes", "bytes with tracestate"],
)
def test_processing_continues_the_trace_the_command_carries(
    captured: Captured, shop: ParticipantTelemetry, headers: Mapping[str, object]
) -> None:
    with shop.processing(_delivery(headers)) as span:
        assert span.is_recording()
        assert trace_api.get_current_span() is span
    [done] = captured.finished()
    assert done.name == "process saga.participant.shop"
    assert done.kind is SpanKind.CONSUMER
    assert hex_trace(done) == TRACE
    assert hex_parent(done) == PARENT
    assert done.parent is not None
    assert done.parent.is_remote is True
    assert hex_span(done) != PARENT
    assert dict(done.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.destination.name": "saga.participant.shop",
        "messaging.message.id": "m-1",
        "saga.participant": "shop",
    }
    if "tracestate" in headers:
        assert done.context is not None
        assert done.context.trace_state.get("vendor") == "abc"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": "00-nonsense"},
        {"traceparent": f"00-{'0' * 32}-{PARENT}-01"},
        {"traceparent": 42},
        {"traceparent": "00-ünïcode".encode()},
    ],
    ids=["absent", "malformed", "zero trace id", "not text", "not ascii"],
)
def test_a_delivery_without_a_usable_traceparent_starts_a_new_trace(
    captured: Captured, shop: ParticipantTelemetry, headers: Mapping[str, object]
) -> None:
    with shop.processing(_delivery(headers)):
        pass
    with shop.processing(_delivery(headers)):
        pass
    first, second = captured.finished()
    for span in (first, second):
        assert span.parent is None
        assert hex_trace(span) != TRACE
    assert hex_trace(first) != hex_trace(second)


def test_handling_is_a_child_of_processing_and_current_while_it_runs(
    captured: Captured, shop: ParticipantTelemetry
) -> None:
    with (
        shop.processing(_delivery({"traceparent": TRACEPARENT})) as processing,
        shop.handling(command()) as handling,
    ):
        assert trace_api.get_current_span() is handling
        tracer = captured.telemetry.tracer
        assert tracer is not None
        tracer.start_span("handler's own work").end()
    own, handle, process = captured.finished()
    assert handle.name == "handle reserve"
    assert hex_parent(handle) == hex_span(process)
    assert hex_parent(own) == hex_span(handle)
    assert {hex_trace(own), hex_trace(handle), hex_trace(process)} == {TRACE}
    assert processing.get_span_context().span_id == int(hex_span(process), 16)
    assert dict(handle.attributes or {}) == {
        "saga.id": "saga-1",
        "saga.name": "checkout",
        "saga.version": 3,
        "saga.step": "reserve",
        "saga.kind": "action",
        "saga.attempt": 2,
        "saga.command": "reserve",
        "saga.participant": "shop",
    }


def _reply(step: StepCommand, outcome: str) -> StepReply:
    if outcome == "success":
        return StepReply.success(step, {"ok": True}, message_id="r-1")
    retryable = outcome == "retryable"
    return StepReply.failure(step, "no_stock", "nothing left", retryable, message_id="r-1")


@pytest.mark.parametrize(
    ("outcome", "from_inbox", "expected"),
    [
        ("success", False, "succeeded"),
        ("permanent", False, "failed"),
        ("retryable", False, "retryable_failure"),
        ("success", True, "succeeded_from_inbox"),
        ("permanent", True, "failed_from_inbox"),
        ("retryable", True, "retryable_failure_from_inbox"),
    ],
)
def test_handled_marks_the_outcome_on_the_span_and_in_the_metrics(
    captured: Captured,
    shop: ParticipantTelemetry,
    outcome: str,
    from_inbox: bool,
    expected: str,
) -> None:
    step = command(kind="compensation", command="release", action_key="saga-1:reserve:action")
    with shop.handling(step) as span:
        shop.handled(span, step, _reply(step, outcome), from_inbox=from_inbox, seconds=0.25)
    [done] = captured.finished()
    attributes = dict(done.attributes or {})
    assert attributes["saga.outcome"] == expected
    assert attributes["saga.from_inbox"] is from_inbox
    if outcome == "success":
        assert done.status.status_code is StatusCode.UNSET
        assert "error.type" not in attributes
    else:
        assert done.status.status_code is StatusCode.ERROR
        assert done.status.description == "no_stock: nothing left"
        assert attributes["error.type"] == "no_stock"
    labels = {
        "saga.participant": "shop",
        "saga.command": "release",
        "saga.kind": "compensation",
        "saga.outcome": expected,
    }
    assert counter(captured.metrics, "saga.participant.commands", **labels) == 1
    assert counter(captured.metrics, "saga.participant.commands") == 1


def test_dead_lettered_marks_the_span_as_an_error(
    captured: Captured, shop: ParticipantTelemetry
) -> None:
    with shop.processing(_delivery({"traceparent": TRACEPARENT})) as span:
        shop.dead_lettered(span, "the body is not JSON")
    [done] = captured.finished()
    assert done.status.status_code is StatusCode.ERROR
    assert done.status.description == "dead-lettered: the body is not JSON"
    outcome = {"saga.participant": "shop", "saga.outcome": "dead_lettered"}
    assert counter(captured.metrics, "saga.participant.commands", **outcome) == 1


def test_with_telemetry_off_the_spans_do_not_record_and_nothing_raises() -> None:
    shop = ParticipantTelemetry(Telemetry.off(), "shop")
    step = command()
    with (
        shop.processing(_delivery({"traceparent": TRACEPARENT})) as processing,
        shop.handling(step) as handling,
    ):
        assert processing.is_recording() is False
        assert handling.is_recording() is False
        assert handling.get_span_context().is_valid is False
        shop.handled(handling, step, _reply(step, "permanent"), from_inbox=False, seconds=0.1)
        shop.dead_lettered(processing, "poison")
