"""Traces and metrics (OpenTelemetry): one trace per saga across every service.

``identity`` decides a saga's ids (no OpenTelemetry import), ``setup`` turns exporting on from
the standard environment, ``sagas`` turns the orchestrator's committed decisions into spans
and metrics.
"""

from orchestrator.telemetry.identity import SagaTrace
from orchestrator.telemetry.setup import SpanRecord, Telemetry, TelemetrySettings

__all__ = ["SagaTrace", "SpanRecord", "Telemetry", "TelemetrySettings"]
