"""SagaTelemetry: committed decisions of the pure state machine become spans and metrics.

Each test drives a saga with ``start`` and ``decide`` on a fake clock, observing every
decision the way the engine does after its commit, and reads what would have been exported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_capture import (
    Captured,
    capturing,
    counter,
    hex_parent,
    hex_span,
    hex_trace,
    histogram,
    labels_of,
    nanos,
)
from telemetry_sagarun import T0, Run, tree

from contracts import TraceContext
from orchestrator.core.events import OperatorAbort
from orchestrator.core.state import JSON, DeadlinePurpose, Kind, SagaStatus
from orchestrator.definitions import REDACTED, SagaDefinition, load_text
from orchestrator.store import OutboxMessage
from orchestrator.telemetry.sagas import SagaTelemetry
from orchestrator.telemetry.setup import SpanRecord, Telemetry, TelemetrySettings

SECRET = "tok_live_4242"
STARTER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
STARTER_SPAN = "00f067aa0ba902b7"

CHECKOUT = """\
name: checkout
version: 3
input:
  type: object
  properties:
    order_id: {type: string}
    card_token: {type: string, secret: true}
defaults:
  timeout: 10s
  retry:
    max_attempts: 3
    backoff: {initial: 1s, multiplier: 2, max: 30s}
steps:
  - name: reserve
    participant: inventory
    command: reserve
    payload: {order_id: "${input.order_id}"}
    compensation: {command: release}
  - name: charge
    participant: payments
    command: charge
    timeout: 5s
    payload: {card_token: "${input.card_token}"}
    compensation: {command: refund}
  - name: notify
    participant: notifications
    command: send_email
"""

ORDER: dict[str, JSON] = {"order_id": "o-1", "card_token": SECRET}


@pytest.fixture(scope="module")
def checkout() -> SagaDefinition:
    return load_text(CHECKOUT, "checkout.yaml")


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capturing() as found:
        yield found


def happy_path_with_a_timeout_and_a_retry(run: Run) -> None:
    """reserve succeeds; charge times out, fails retryably, then succeeds; notify succeeds."""
    run.succeed("reserve", after=2)  # t2: charge #1 sent
    run.fire("charge", DeadlinePurpose.REPLY)  # t7: timed out, retry at t8
    run.fire("charge", DeadlinePurpose.RETRY)  # t8: charge #2 sent
    run.fail("charge", after=1, retryable=True)  # t9: retry at t11
    run.fire("charge", DeadlinePurpose.RETRY)  # t11: charge #3 sent
    run.succeed("charge", after=1)  # t12: notify #1 sent
    run.succeed("notify", after=1)  # t13: completed
    assert run.state.status is SagaStatus.COMPLETED


def compensated_after_a_declined_card(run: Run) -> None:
    """charge is declined naming the card token; reserve's compensation fails once."""
    run.succeed("reserve", after=1)  # t1: charge #1 sent
    run.fail(
        "charge",
        after=1,
        retryable=False,
        code="declined",
        message=f"card {SECRET} was declined",
    )  # t2: compensate reserve #1 sent
    run.fail(
        "reserve", after=3, retryable=True, kind=Kind.COMPENSATION, message="busy"
    )  # t5: retry at t6
    run.fire("reserve", DeadlinePurpose.RETRY)  # t6: compensate reserve #2 sent
    run.succeed("reserve", after=1, kind=Kind.COMPENSATION)  # t7: compensated
    assert run.state.status is SagaStatus.COMPENSATED


def test_a_completed_saga_is_one_tree_with_a_span_per_ended_attempt(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    happy_path_with_a_timeout_and_a_retry(run)
    assert tree(captured.finished(), T0) == "\n".join(
        [
            "saga checkout completed 0s..13s ok",
            "  step reserve #1 succeeded 0s..2s ok",
            "  step charge #1 timed_out 2s..7s ERROR",
            "  step charge #2 failed 8s..9s ERROR",
            "  step charge #3 succeeded 11s..12s ok",
            "  step notify #1 succeeded 12s..13s ok",
        ]
    )


def test_each_attempt_span_is_the_parent_named_in_its_commands_traceparent(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    happy_path_with_a_timeout_and_a_retry(run)
    [root] = captured.named("saga checkout")
    attempts = [span for span in captured.finished() if span is not root]
    assert len(attempts) == len(run.sent) == 5
    for span in attempts:
        attributes = dict(span.attributes or {})
        key = f"saga-1:{attributes['saga.step']}:action"
        attempt = attributes["saga.attempt"]
        assert isinstance(attempt, int)
        sent = run.sent[(key, attempt)]
        assert hex_span(span) == run.span_id_sent(key, attempt)
        assert hex_trace(span) == run.trace.trace_id
        assert hex_parent(span) == run.trace.span_id == hex_span(root)
        assert span.start_time == nanos(sent.at)
        assert span.kind is SpanKind.PRODUCER
        assert attributes["saga.participant"] == sent.command.participant
        assert attributes["saga.command"] == sent.command.command
        assert attributes["saga.kind"] == "action"
        assert attributes["saga.id"] == "saga-1"
        assert attributes["saga.version"] == 3


def test_a_timed_out_attempt_says_so_with_an_error_status(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    run.succeed("reserve", after=2)
    run.fire("charge", DeadlinePurpose.REPLY)
    [span] = captured.named("step charge")
    assert dict(span.attributes or {})["saga.outcome"] == "timed_out"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "no reply within 5s"
    assert span.start_time == nanos(T0 + timedelta(seconds=2))
    assert span.end_time == nanos(T0 + timedelta(seconds=7))


def test_the_root_span_is_emitted_once_when_the_saga_completes(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    run.succeed("reserve", after=1)
    run.succeed("charge", after=1)
    assert captured.named("saga checkout") == []
    run.succeed("notify", after=1)
    # A duplicate of the last reply is ignored: nothing more is exported.
    run.succeed("notify", after=1)
    [root] = captured.named("saga checkout")
    assert len(captured.finished()) == 4
    assert root.start_time == nanos(T0)
    assert root.end_time == nanos(T0 + timedelta(seconds=3))
    assert root.parent is None
    assert hex_trace(root) == run.trace.trace_id
    assert hex_span(root) == run.trace.span_id
    assert root.status.status_code is StatusCode.UNSET
    assert dict(root.attributes or {}) == {
        "saga.id": "saga-1",
        "saga.name": "checkout",
        "saga.version": 3,
        "saga.outcome": "completed",
    }


def test_the_root_starts_when_the_saga_was_created_not_when_it_was_last_seen(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    run.created_at = T0 - timedelta(seconds=30)
    run.succeed("reserve", after=1)
    run.succeed("charge", after=1)
    run.succeed("notify", after=1)
    [root] = captured.named("saga checkout")
    assert root.start_time == nanos(T0 - timedelta(seconds=30))
    assert histogram(captured.metrics, "saga.duration") == (1, 33.0)


def test_a_saga_started_inside_a_trace_stays_in_it(
    captured: Captured, checkout: SagaDefinition
) -> None:
    starter = TraceContext(traceparent=f"00-{STARTER_TRACE}-{STARTER_SPAN}-01")
    run = Run.begin(captured.telemetry, checkout, ORDER, starter=starter)
    run.succeed("reserve", after=1)
    run.succeed("charge", after=1)
    run.succeed("notify", after=1)
    [root] = captured.named("saga checkout")
    assert hex_parent(root) == STARTER_SPAN
    assert {hex_trace(span) for span in captured.finished()} == {STARTER_TRACE}


def test_an_unsampled_saga_exports_no_spans_but_is_still_measured(
    captured: Captured, checkout: SagaDefinition
) -> None:
    starter = TraceContext(traceparent=f"00-{STARTER_TRACE}-{STARTER_SPAN}-00")
    run = Run.begin(captured.telemetry, checkout, ORDER, starter=starter)
    happy_path_with_a_timeout_and_a_retry(run)
    assert captured.finished() == []
    assert counter(captured.metrics, "saga.ended", **{"saga.outcome": "completed"}) == 1


def test_a_compensated_saga_has_compensation_spans_and_an_error_root(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    compensated_after_a_declined_card(run)
    assert tree(captured.finished(), T0) == "\n".join(
        [
            "saga checkout compensated 0s..7s ERROR",
            "  step reserve #1 succeeded 0s..1s ok",
            "  step charge #1 failed 1s..2s ERROR",
            "  compensate reserve #1 failed 2s..5s ERROR",
            "  compensate reserve #2 succeeded 6s..7s ok",
        ]
    )
    for span in captured.named("compensate reserve"):
        attributes = dict(span.attributes or {})
        attempt = attributes["saga.attempt"]
        assert isinstance(attempt, int)
        assert hex_span(span) == run.span_id_sent("saga-1:reserve:compensation", attempt)
        assert attributes["saga.kind"] == "compensation"
        assert attributes["saga.command"] == "release"
    [root] = captured.named("saga checkout")
    assert dict(root.attributes or {})["saga.failed_step"] == "charge"
    assert (
        root.status.description
        == f"compensated: declined: card {REDACTED} was declined (step charge)"
    )


def test_secret_input_values_never_reach_a_span(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    compensated_after_a_declined_card(run)
    [charge] = captured.named("step charge")
    assert charge.status.description == f"declined: card {REDACTED} was declined"
    for span in captured.finished():
        texts = [span.status.description or "", span.name]
        texts += [str(value) for value in (span.attributes or {}).values()]
        texts += [
            str(value) for event in span.events for value in (event.attributes or {}).values()
        ]
        for text in texts:
            assert SECRET not in text, f"{span.name} shows the secret: {text}"


def test_a_saga_whose_compensation_fails_for_good_ends_failed(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    run.succeed("reserve", after=1)
    run.fail("charge", after=1, retryable=False, code="declined")
    run.fail(
        "reserve",
        after=1,
        retryable=False,
        kind=Kind.COMPENSATION,
        code="gone",
        message="the reservation vanished",
    )
    assert run.state.status is SagaStatus.FAILED
    [root] = captured.named("saga checkout")
    assert dict(root.attributes or {})["saga.outcome"] == "failed"
    assert dict(root.attributes or {})["saga.failed_step"] == "reserve"
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "failed: gone: the reservation vanished (step reserve)"
    assert counter(captured.metrics, "saga.ended", **{"saga.outcome": "failed"}) == 1


def test_an_abort_ends_the_attempt_in_flight_as_aborted(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    run.succeed("reserve", after=1)
    run.feed(OperatorAbort(reason="customer called"), after=1)
    [span] = captured.named("step charge")
    assert dict(span.attributes or {})["saga.outcome"] == "aborted"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "abandoned by an operator abort"
    assert hex_span(span) == run.span_id_sent("saga-1:charge:action", 1)
    assert span.end_time == nanos(T0 + timedelta(seconds=2))


def test_an_earlier_attempts_success_supersedes_the_attempt_in_flight(
    captured: Captured, checkout: SagaDefinition
) -> None:
    run = Run.begin(captured.telemetry, checkout, ORDER)
    run.fire("reserve", DeadlinePurpose.REPLY)  # t10: #1 timed out
    run.fire("reserve", DeadlinePurpose.RETRY)  # t11: #2 sent
    run.succeed("reserve", after=1, attempt=1)  # t12: #1 answers after all
    spans = captured.named("step reserve")
    assert [dict(s.attributes or {})["saga.outcome"] for s in spans] == ["timed_out", "superseded"]
    superseded = spans[1]
    assert hex_span(superseded) == run.span_id_sent("saga-1:reserve:action", 2)
    assert superseded.status.status_code is StatusCode.UNSET
    assert superseded.start_time == nanos(T0 + timedelta(seconds=11))
    assert superseded.end_time == nanos(T0 + timedelta(seconds=12))


def test_the_metrics_count_what_happened(captured: Captured, checkout: SagaDefinition) -> None:
    happy = Run.begin(captured.telemetry, checkout, ORDER, saga_id="saga-1")
    happy_path_with_a_timeout_and_a_retry(happy)
    undone = Run.begin(captured.telemetry, checkout, ORDER, saga_id="saga-2")
    compensated_after_a_declined_card(undone)
    reader = captured.metrics
    named = {"saga.name": "checkout"}
    assert counter(reader, "saga.started", **named) == 2
    assert counter(reader, "saga.ended", **named, **{"saga.outcome": "completed"}) == 1
    assert counter(reader, "saga.ended", **named, **{"saga.outcome": "compensated"}) == 1
    assert counter(reader, "saga.ended", **{"saga.outcome": "failed"}) == 0
    assert (
        counter(reader, "saga.step.retries", **{"saga.step": "charge", "saga.kind": "action"}) == 2
    )
    retries = {"saga.step": "reserve", "saga.kind": "compensation"}
    assert counter(reader, "saga.step.retries", **retries) == 1
    assert counter(reader, "saga.step.retries") == 3
    assert counter(reader, "saga.step.timeouts", **{"saga.step": "charge"}) == 1
    assert counter(reader, "saga.step.timeouts") == 1
    # One duration per ended attempt: 5 in the first saga, 4 in the second.
    assert histogram(reader, "saga.step.duration")[0] == 9
    timed_out = {"saga.step": "charge", "saga.outcome": "timed_out"}
    assert histogram(reader, "saga.step.duration", **timed_out) == (1, 5.0)
    compensations = {"saga.step": "reserve", "saga.kind": "compensation"}
    assert histogram(reader, "saga.step.duration", **compensations) == (2, 4.0)
    assert histogram(reader, "saga.duration") == (2, 20.0)
    for labels in labels_of(reader, "saga.step.duration"):
        assert set(labels) == {"saga.name", "saga.step", "saga.kind", "saga.outcome"}


def test_the_outbox_lag_is_measured_per_message_type(captured: Captured) -> None:
    observer = SagaTelemetry(captured.telemetry)
    now = T0 + timedelta(seconds=10)
    observer.outbox_sent(
        [
            _outbox("saga.command", T0 + timedelta(seconds=7)),
            _outbox("saga.command", T0 + timedelta(seconds=9)),
            _outbox(None, now + timedelta(seconds=1)),  # a clock step back counts as no lag
            _outbox("saga.command", None),  # not stored yet: nothing to measure
        ],
        now,
    )
    reader = captured.metrics
    assert histogram(reader, "saga.outbox.lag", **{"saga.message_type": "saga.command"}) == (2, 4.0)
    assert histogram(reader, "saga.outbox.lag", **{"saga.message_type": "unknown"}) == (1, 0.0)


def _outbox(type: str | None, created_at: datetime | None) -> OutboxMessage:
    return OutboxMessage(
        message_id="m",
        exchange="x",
        routing_key="r",
        body=b"{}",
        type=type,
        created_at=created_at,
    )


class _RecordingOff(Telemetry):
    """Telemetry that is off but remembers every span it was asked to emit."""

    def __init__(self) -> None:
        super().__init__(TelemetrySettings(service_name="test"))
        self.emitted: list[SpanRecord] = []

    def emit_span(self, record: SpanRecord) -> None:
        self.emitted.append(record)


def test_observe_does_nothing_when_telemetry_is_off(checkout: SagaDefinition) -> None:
    telemetry = _RecordingOff()
    run = Run.begin(telemetry, checkout, ORDER)
    happy_path_with_a_timeout_and_a_retry(run)
    assert run.observer.enabled is False
    assert telemetry.emitted == []


class _Broken(Telemetry):
    """Telemetry whose exporter fails on every span."""

    def emit_span(self, record: SpanRecord) -> None:
        raise RuntimeError(f"exporter down for {record.name}")


def test_a_failure_inside_observe_is_logged_not_raised(
    checkout: SagaDefinition, caplog: pytest.LogCaptureFixture
) -> None:
    with capturing() as found:
        telemetry = _Broken(found.telemetry.settings, found.tracer_provider, found.meter_provider)
        caplog.set_level(logging.ERROR, logger="orchestrator.telemetry.sagas")
        run = Run.begin(telemetry, checkout, ORDER)
        run.succeed("reserve", after=1)
        run.succeed("charge", after=1)
    assert run.state.steps[1].status.value == "succeeded"
    failures = [r for r in caplog.records if r.name == "orchestrator.telemetry.sagas"]
    assert len(failures) == 2
    for failure in failures:
        assert failure.getMessage() == "recording telemetry for saga saga-1 failed"
        assert failure.exc_info is not None
        assert isinstance(failure.exc_info[1], RuntimeError)
