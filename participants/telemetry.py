"""A participant's spans and metrics, wrapped around the handling of each command.

Each delivery gets a consumer span ``process <queue>``, continued from the command's W3C
``traceparent`` (the orchestrator's span for that attempt), and the handler runs inside a
child span ``handle <command>``, the current span while it runs: spans the handler opens
itself (or an instrumented library it calls) land under it, in the saga's trace.
With telemetry off both are non-recording and cost next to nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts import StepCommand, StepReply, TraceContext
from orchestrator.telemetry.setup import Telemetry
from orchestrator.transport import Delivery

_PROPAGATOR = TraceContextTextMapPropagator()
_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ParticipantTelemetry:
    """Spans and metrics of one participant service."""

    def __init__(self, telemetry: Telemetry, participant: str) -> None:
        self.telemetry = telemetry
        self.participant = participant
        self._tracer = telemetry.tracer
        meter = telemetry.meter
        self.commands = meter.create_counter(
            "saga.participant.commands",
            unit="{command}",
            description="Commands handled, by command, kind and outcome",
        )
        self.duration = meter.create_histogram(
            "saga.participant.handler.duration",
            unit="s",
            description="Time from taking a command to having its reply ready",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )

    @contextmanager
    def processing(self, delivery: Delivery) -> Iterator[trace_api.Span]:
        """The consumer span of one delivery (current while the delivery is handled)."""
        if self._tracer is None:
            yield trace_api.INVALID_SPAN
            return
        parent = None
        carried = TraceContext.from_headers(delivery.headers)
        if carried is not None:
            parent = _PROPAGATOR.extract(carried.to_headers())
        attributes = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.queue,
            "messaging.message.id": delivery.message_id or "",
            "saga.participant": self.participant,
        }
        with self._tracer.start_as_current_span(
            f"process {delivery.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    @contextmanager
    def handling(self, command: StepCommand) -> Iterator[trace_api.Span]:
        """The span around running one command's handler (or answering it from the inbox)."""
        if self._tracer is None:
            yield trace_api.INVALID_SPAN
            return
        attributes: dict[str, Any] = {
            "saga.id": command.saga_id,
            "saga.name": command.saga_name,
            "saga.version": command.saga_version,
            "saga.step": command.step,
            "saga.kind": command.kind,
            "saga.attempt": command.attempt,
            "saga.command": command.command,
            "saga.participant": self.participant,
        }
        with self._tracer.start_as_current_span(
            f"handle {command.command}", attributes=attributes
        ) as span:
            yield span

    def handled(
        self,
        span: trace_api.Span,
        command: StepCommand,
        reply: StepReply,
        *,
        from_inbox: bool,
        seconds: float,
    ) -> None:
        """Mark how a command ended, on its span and in the metrics."""
        if reply.outcome == "success":
            outcome = "succeeded"
        elif reply.error is not None and reply.error.retryable:
            outcome = "retryable_failure"
        else:
            outcome = "failed"
        if from_inbox:
            outcome = f"{outcome}_from_inbox"
        labels = {
            "saga.participant": self.participant,
            "saga.command": command.command,
            "saga.kind": command.kind,
            "saga.outcome": outcome,
        }
        self.commands.add(1, labels)
        self.duration.record(seconds, labels)
        if not span.is_recording():
            return
        span.set_attribute("saga.outcome", outcome)
        span.set_attribute("saga.from_inbox", from_inbox)
        if reply.error is not None:
            span.set_attribute("error.type", reply.error.code)
            span.set_status(Status(StatusCode.ERROR, f"{reply.error.code}: {reply.error.message}"))

    def dead_lettered(self, span: trace_api.Span, reason: str) -> None:
        """Mark a delivery that was dead-lettered instead of handled."""
        self.commands.add(
            1,
            {
                "saga.participant": self.participant,
                "saga.command": "",
                "saga.kind": "",
                "saga.outcome": "dead_lettered",
            },
        )
        if span.is_recording():
            span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {reason}"))
