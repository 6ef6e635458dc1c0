"""A Telemetry that keeps its spans and metrics in memory, for the telemetry tests.

The providers are the ones :meth:`Telemetry.start` would build, minus the exporters that
talk to the network: the tests read what would have been exported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.telemetry.setup import Telemetry, TelemetrySettings, _PresetIdGenerator

__all__ = [
    "Captured",
    "capturing",
    "counter",
    "hex_parent",
    "hex_span",
    "hex_trace",
    "histogram",
    "labels_of",
    "nanos",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Captured:
    """A Telemetry and where its spans and metrics land."""

    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        """Every span exported so far, in the order they ended."""
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        """The exported spans called ``name``."""
        return [span for span in self.finished() if span.name == name]


@contextmanager
def capturing(service_name: str = "test") -> Iterator[Captured]:
    """A Telemetry with in-memory span and metric readers, shut down afterwards."""
    provider = TracerProvider(id_generator=_PresetIdGenerator(), shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    telemetry = Telemetry(TelemetrySettings(service_name=service_name), provider, meter_provider)
    try:
        yield Captured(telemetry, exporter, reader, provider, meter_provider)
    finally:
        telemetry.shutdown()


def nanos(at: datetime) -> int:
    """``at`` in nanoseconds since the epoch, computed exactly (no float)."""
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


def hex_trace(span: ReadableSpan) -> str:
    """The span's trace id as 32 hex digits."""
    context = span.context
    assert context is not None
    return f"{context.trace_id:032x}"


def hex_span(span: ReadableSpan) -> str:
    """The span's own id as 16 hex digits."""
    context = span.context
    assert context is not None
    return f"{context.span_id:016x}"


def hex_parent(span: ReadableSpan) -> str | None:
    """The span's parent id as 16 hex digits, or None for a root span."""
    if span.parent is None:
        return None
    return f"{span.parent.span_id:016x}"


def _points(reader: InMemoryMetricReader, name: str) -> Iterator[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    yield from metric.data.data_points


def _matches(attributes: Mapping[str, Any] | None, labels: Mapping[str, Any]) -> bool:
    found = dict(attributes or {})
    return all(found.get(key) == value for key, value in labels.items())


def counter(reader: InMemoryMetricReader, name: str, **labels: Any) -> float:
    """The total of counter ``name`` over the points whose attributes include ``labels``."""
    total: float = 0
    for point in _points(reader, name):
        assert isinstance(point, NumberDataPoint), f"{name} is not a counter"
        if _matches(point.attributes, labels):
            total += point.value
    return total


def histogram(reader: InMemoryMetricReader, name: str, **labels: Any) -> tuple[int, float]:
    """How many values histogram ``name`` recorded, and their sum, where ``labels`` match."""
    count, total = 0, 0.0
    for point in _points(reader, name):
        assert isinstance(point, HistogramDataPoint), f"{name} is not a histogram"
        if _matches(point.attributes, labels):
            count += point.count
            total += point.sum
    return count, total


def labels_of(reader: InMemoryMetricReader, name: str) -> list[dict[str, Any]]:
    """The attribute sets metric ``name`` was recorded with."""
    return [dict(point.attributes or {}) for point in _points(reader, name)]
