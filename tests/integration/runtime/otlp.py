"""A real OTLP/HTTP receiver for the tests: it decodes the protobuf exports of the services
under test (``/v1/traces``, ``/v1/metrics``) and keeps the spans and metric points.

Spans are compared by shape: :func:`span_tree` renders one trace as indented text
(children ordered by start time), so a test states the tree it expects as a string.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["MetricPoint", "OtlpReceiver", "ReceivedSpan", "span_tree"]

_STATUS_ERROR = 2


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as the receiver decoded it."""

    service: str
    instance: str
    """``service.instance.id``: which process exported the span."""
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any]
    error: str | None
    """The status message when the status is ERROR, else None."""


@dataclass(frozen=True)
class MetricPoint:
    """One data point of a sum, gauge or histogram (``value`` is the count for a histogram)."""

    service: str
    name: str
    attributes: Mapping[str, Any]
    value: float
    start_ns: int
    time_ns: int


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items if isinstance(item, KeyValue)}


class OtlpReceiver:
    """An HTTP server on 127.0.0.1 (a free port) that takes OTLP/HTTP protobuf exports."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.points: list[MetricPoint] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path == "/v1/traces":
                    receiver._take_spans(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._take_metrics(body)
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @contextmanager
    def running(self) -> Iterator[OtlpReceiver]:
        """Serve for the duration of the block."""
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()

    def _take_spans(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            service = str(resource.get("service.name"))
            instance = str(resource.get("service.instance.id"))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    error = span.status.message if span.status.code == _STATUS_ERROR else None
                    found.append(
                        ReceivedSpan(
                            service=service,
                            instance=instance,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes=_attributes(span.attributes),
                            error=error,
                        )
                    )
        with self._lock:
            self.spans.extend(found)
            self.requests += 1

    def _take_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_metrics in request.resource_metrics:
            service = str(_attributes(resource_metrics.resource.attributes).get("service.name"))
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        if kind == "histogram":
                            value = float(point.count)
                        elif point.WhichOneof("value") == "as_int":
                            value = float(point.as_int)
                        else:
                            value = point.as_double
                        found.append(
                            MetricPoint(
                                service=service,
                                name=metric.name,
                                attributes=_attributes(point.attributes),
                                value=value,
                                start_ns=point.start_time_unix_nano,
                                time_ns=point.time_unix_nano,
                            )
                        )
        with self._lock:
            self.points.extend(found)
            self.requests += 1

    def spans_now(self) -> list[ReceivedSpan]:
        """A copy of the spans received so far."""
        with self._lock:
            return list(self.spans)

    def latest(self, service: str, name: str, **attributes: Any) -> float | None:
        """The newest value of a metric point with these attributes from ``service``."""
        with self._lock:
            points = [
                p
                for p in self.points
                if p.service == service
                and p.name == name
                and all(p.attributes.get(k) == v for k, v in attributes.items())
            ]
        return max(points, key=lambda p: p.time_ns).value if points else None

    async def wait_for(self, what: str, check: Callable[[], bool], *, within: float = 30.0) -> None:
        """Poll ``check`` until it holds; AssertionError naming ``what`` after ``within`` s."""
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"the OTLP receiver never saw {what} within {within:g}s")
            await asyncio.sleep(0.1)


Describe = Callable[[ReceivedSpan], str]


def span_tree(spans: list[ReceivedSpan], trace_id: str, describe: Describe) -> str:
    """One trace as indented text: each span as ``describe`` renders it, children under their
    parent by start time. A span whose parent is not in the trace shows as an extra root,
    so a broken tree cannot look like a whole one."""
    mine = [span for span in spans if span.trace_id == trace_id]
    ids = {span.span_id for span in mine}
    children: dict[str | None, list[ReceivedSpan]] = {}
    for span in mine:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: (s.start_ns, s.name)):
            lines.append("  " * depth + describe(span))
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)
