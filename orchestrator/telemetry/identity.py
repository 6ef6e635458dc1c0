"""Who a saga's spans are: its trace id and span ids, decided once and kept with the instance.

A saga lives longer than any process, so its spans cannot be held open in memory: the root
span ``saga <name>`` is exported when the saga ends, and each attempt's span when the
attempt ends, possibly by another orchestrator process than the one that sent it. What
makes them one tree is that every id is known in advance: the trace id and the root span id
are chosen when the saga starts and stored with it (``trace_context``), and an attempt's
span id is derived from the root span id, the command's idempotency key and the attempt
number, so the process that sends the command (and puts that span id in the command's
``traceparent``) and the one that ends the attempt compute the same id.

No OpenTelemetry import here: this is computed whether or not anything is exported, so a
participant that exports spans continues the saga's trace even when the orchestrator does
not.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from contracts import TraceContext

_SAMPLED = 0x01


@dataclass(frozen=True)
class SagaTrace:
    """A saga's trace: ids as lowercase hex, as in a W3C ``traceparent``."""

    trace_id: str
    span_id: str
    """The root span's (``saga <name>``)."""
    parent_span_id: str | None = None
    """The starter's span, when the start request carried a ``traceparent``."""
    sampled: bool = True
    tracestate: str | None = None

    @classmethod
    def begin(cls, saga_id: str, starter: TraceContext | None) -> SagaTrace:
        """The trace of a new saga: inside the starter's trace when it sent one."""
        span_id = _derive(saga_id, "root")
        if starter is None:
            return cls(trace_id=secrets.token_hex(16), span_id=span_id)
        _version, trace_id, parent, flags = starter.traceparent.split("-")
        return cls(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent,
            sampled=bool(int(flags, 16) & _SAMPLED),
            tracestate=starter.tracestate,
        )

    @classmethod
    def stored(cls, saga_id: str, stored: Mapping[str, str] | None) -> SagaTrace:
        """The trace kept with a saga; a saga stored without one gets a trace derived from
        its id (the same in every process), and one stored with only the starter's
        ``traceparent`` continues inside that trace."""
        if stored and "trace_id" in stored and "span_id" in stored:
            return cls(
                trace_id=stored["trace_id"],
                span_id=stored["span_id"],
                parent_span_id=stored.get("parent_span_id"),
                sampled=stored.get("sampled", "1") == "1",
                tracestate=stored.get("tracestate"),
            )
        if stored and "traceparent" in stored:
            starter = TraceContext.from_headers(stored)
            if starter is not None:
                return cls.begin(saga_id, starter)
        return cls(trace_id=_derive(saga_id, "trace", 16), span_id=_derive(saga_id, "root"))

    def to_stored(self) -> dict[str, str]:
        """What the store keeps (``saga_instances.trace_context``)."""
        out = {"trace_id": self.trace_id, "span_id": self.span_id}
        out["sampled"] = "1" if self.sampled else "0"
        if self.parent_span_id is not None:
            out["parent_span_id"] = self.parent_span_id
        if self.tracestate is not None:
            out["tracestate"] = self.tracestate
        return out

    def attempt_span_id(self, idempotency_key: str, attempt: int) -> str:
        """The span id of one attempt of a command (``step X`` or ``compensate X``)."""
        return _derive(f"{self.span_id}:{idempotency_key}", str(attempt))

    def context_for(self, span_id: str) -> TraceContext:
        """The W3C context naming ``span_id`` in this trace as the parent."""
        flags = "01" if self.sampled else "00"
        return TraceContext(
            traceparent=f"00-{self.trace_id}-{span_id}-{flags}", tracestate=self.tracestate
        )

    def command_context(self, idempotency_key: str, attempt: int) -> TraceContext:
        """The ``traceparent`` a command carries: its attempt's span is the parent of the
        participant's spans."""
        return self.context_for(self.attempt_span_id(idempotency_key, attempt))


def _derive(seed: str, label: str, size: int = 8) -> str:
    """A stable, non-zero id of ``size`` bytes from ``seed`` and ``label``, as hex."""
    digest = hashlib.blake2b(f"{seed}/{label}".encode(), digest_size=size).hexdigest()
    if int(digest, 16) == 0:  # all-zero ids are invalid in W3C trace context
        return "0" * (size * 2 - 1) + "1"
    return digest


def trace_id_of(context: TraceContext | None) -> str | None:
    """The trace id a message's ``traceparent`` names (for log lines), or None."""
    if context is None:
        return None
    return context.traceparent.split("-")[1]
