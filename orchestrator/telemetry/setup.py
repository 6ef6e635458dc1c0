"""Switching OpenTelemetry on from the standard environment, and off again with a flush.

Nothing is exported unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the per-signal
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``) is set, or, for metrics,
``SAGA_METRICS_PORT`` asks for a Prometheus scrape endpoint. Without them
:class:`Telemetry` holds no provider and every caller skips its work: tracing off costs
nothing but an ``if``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from orchestrator.settings import SettingsError

log = logging.getLogger(__name__)

PROTOCOLS = ("http/protobuf", "grpc")
INSTRUMENTATION = "saga-orchestrator"


@dataclass(frozen=True)
class TelemetrySettings:
    """Where spans and metrics go; built from ``OTEL_*`` and ``SAGA_METRICS_*``."""

    service_name: str
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    protocol: str = "http/protobuf"
    metrics_port: int | None = None
    metrics_address: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, service_name: str) -> TelemetrySettings:
        """The standard variables (``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME``,
        ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL``,
        ``OTEL_TRACES_EXPORTER``/``OTEL_METRICS_EXPORTER`` = ``none``) plus
        ``SAGA_METRICS_PORT``/``SAGA_METRICS_ADDRESS``; ``service_name`` is the default name."""
        name = environ.get("OTEL_SERVICE_NAME") or service_name
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(service_name=name)
        protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() or "http/protobuf"
        if protocol not in PROTOCOLS:
            raise SettingsError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL must be one of {', '.join(PROTOCOLS)},"
                f" not {protocol!r}"
            )
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None
        traces = _endpoint(environ, "TRACES", base, protocol)
        metrics = _endpoint(environ, "METRICS", base, protocol)
        return cls(
            service_name=name,
            traces_endpoint=traces,
            metrics_endpoint=metrics,
            protocol=protocol,
            metrics_port=_port(environ.get("SAGA_METRICS_PORT", "")),
            metrics_address=environ.get("SAGA_METRICS_ADDRESS", "").strip() or "127.0.0.1",
        )

    @property
    def tracing(self) -> bool:
        """True when spans are exported."""
        return self.traces_endpoint is not None

    @property
    def metrics(self) -> bool:
        """True when metrics are exported or served."""
        return self.metrics_endpoint is not None or self.metrics_port is not None


def _endpoint(
    environ: Mapping[str, str], signal: str, base: str | None, protocol: str
) -> str | None:
    if environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower() == "none":
        return None
    specific = environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    if specific:
        return specific
    if base is None:
        return None
    if protocol == "grpc":
        return base
    return f"{base.rstrip('/')}/v1/{signal.lower()}"


def _port(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 65536:
        raise SettingsError(f"SAGA_METRICS_PORT must be a port number (1-65535), not {raw!r}")
    return int(raw)


# -- spans with ids decided in advance --------------------------------------------------

_NEXT_IDS: ContextVar[tuple[int, int] | None] = ContextVar("saga_next_span_ids", default=None)


class _PresetIdGenerator(IdGenerator):
    """Random ids, except for a span started by :meth:`Telemetry.emit_span`, which gets
    the ids the saga's :class:`~orchestrator.telemetry.identity.SagaTrace` decided."""

    def __init__(self) -> None:
        self._random = random.SystemRandom()

    def generate_span_id(self) -> int:
        preset = _NEXT_IDS.get()
        if preset is not None:
            return preset[1]
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        preset = _NEXT_IDS.get()
        if preset is not None:
            return preset[0]
        return self._random.getrandbits(128) or 1


@dataclass(frozen=True)
class SpanRecord:
    """A finished span to export, with every id and time already known."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start: datetime
    end: datetime
    attributes: Mapping[str, Any]
    kind: SpanKind = SpanKind.INTERNAL
    error: str | None = None
    """The status description when the span failed; None for OK."""
    sampled: bool = True
    events: Sequence[tuple[str, datetime, Mapping[str, Any]]] = ()


class Telemetry:
    """The process's tracer and meter (real when configured, no-op otherwise)."""

    def __init__(
        self,
        settings: TelemetrySettings,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._prometheus: Any = None
        self.tracer: trace_api.Tracer | None = (
            tracer_provider.get_tracer(INSTRUMENTATION) if tracer_provider is not None else None
        )
        self.meter: metrics_api.Meter = (
            meter_provider.get_meter(INSTRUMENTATION)
            if meter_provider is not None
            else metrics_api.NoOpMeter(INSTRUMENTATION)
        )

    @classmethod
    def off(cls, service_name: str = INSTRUMENTATION) -> Telemetry:
        """Nothing exported, nothing measured."""
        return cls(TelemetrySettings(service_name=service_name))

    @classmethod
    def start(cls, settings: TelemetrySettings, *, install_global: bool = False) -> Telemetry:
        """Providers and exporters for ``settings``; ``install_global`` also makes them the
        process's OpenTelemetry providers, so a participant handler's own spans (and any
        instrumented library's) join the saga's trace."""
        # One instance id per process: several orchestrators (or a restarted one) are told
        # apart in a trace.
        resource = Resource.create(
            {"service.name": settings.service_name, "service.instance.id": str(uuid.uuid4())}
        )
        tracer_provider = None
        if settings.tracing:
            tracer_provider = TracerProvider(resource=resource, id_generator=_PresetIdGenerator())
            tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(settings)))
        readers: list[MetricReader] = []
        prometheus = None
        if settings.metrics_endpoint is not None:
            readers.append(PeriodicExportingMetricReader(_metric_exporter(settings)))
        if settings.metrics_port is not None:
            prometheus = _Prometheus(settings.metrics_address, settings.metrics_port)
            readers.append(prometheus.reader)
        meter_provider = (
            MeterProvider(resource=resource, metric_readers=readers) if readers else None
        )
        telemetry = cls(settings, tracer_provider, meter_provider)
        telemetry._prometheus = prometheus
        if install_global:
            if tracer_provider is not None:
                trace_api.set_tracer_provider(tracer_provider)
            if meter_provider is not None:
                metrics_api.set_meter_provider(meter_provider)
        if settings.tracing or settings.metrics:
            log.info(
                "telemetry on: traces %s, metrics %s",
                settings.traces_endpoint or "off",
                _describe_metrics(settings),
            )
        return telemetry

    @property
    def tracing(self) -> bool:
        """True when spans are exported."""
        return self.tracer is not None

    @property
    def measuring(self) -> bool:
        """True when metrics are exported or served."""
        return self._meter_provider is not None

    def emit_span(self, record: SpanRecord) -> None:
        """Export a span whose ids and times were decided elsewhere (a saga's spans)."""
        if self.tracer is None:
            return
        parent = None
        if record.parent_span_id is not None:
            flags = trace_api.TraceFlags(
                trace_api.TraceFlags.SAMPLED if record.sampled else trace_api.TraceFlags.DEFAULT
            )
            parent_context = trace_api.SpanContext(
                int(record.trace_id, 16), int(record.parent_span_id, 16), True, flags
            )
            parent = trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent_context))
        token = _NEXT_IDS.set((int(record.trace_id, 16), int(record.span_id, 16)))
        try:
            span = self.tracer.start_span(
                record.name,
                context=parent,
                kind=record.kind,
                attributes=dict(record.attributes),
                start_time=_nanos(record.start),
            )
        finally:
            _NEXT_IDS.reset(token)
        for name, at, attributes in record.events:
            span.add_event(name, dict(attributes), timestamp=_nanos(at))
        if record.error is not None:
            span.set_status(Status(StatusCode.ERROR, record.error))
        span.end(end_time=_nanos(max(record.end, record.start)))

    def shutdown(self) -> None:
        """Flush what is buffered and stop the exporters (graceful shutdown)."""
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
        if self._meter_provider is not None:
            self._meter_provider.shutdown()
        if self._prometheus is not None:
            self._prometheus.close()


def _nanos(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def _describe_metrics(settings: TelemetrySettings) -> str:
    where = []
    if settings.metrics_endpoint is not None:
        where.append(settings.metrics_endpoint)
    if settings.metrics_port is not None:
        where.append(f"http://{settings.metrics_address}:{settings.metrics_port}/metrics")
    return " and ".join(where) or "off"


def _span_exporter(settings: TelemetrySettings) -> Any:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        endpoint = settings.traces_endpoint or ""
        return GrpcSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.traces_endpoint)


def _metric_exporter(settings: TelemetrySettings) -> Any:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        endpoint = settings.metrics_endpoint or ""
        return GrpcMetricExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=settings.metrics_endpoint)


class _Prometheus:
    """A scrape endpoint (``/metrics``) on its own registry, served from a thread."""

    def __init__(self, address: str, port: int) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry()
        self.reader = PrometheusMetricReader(registry=self.registry)
        try:
            self._server, self._thread = start_http_server(port, address, registry=self.registry)
        except OSError as exc:
            raise SettingsError(
                f"cannot serve metrics on {address}:{port} (SAGA_METRICS_PORT): {exc.strerror}"
            ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._server.shutdown()
            self._server.server_close()
