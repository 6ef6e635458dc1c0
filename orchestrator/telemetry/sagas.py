"""The orchestrator's spans and metrics, read from what each decision recorded in the history.

The engine hands every committed decision here (the state before it, the decision, the
saga's :class:`~orchestrator.telemetry.identity.SagaTrace`). The history records say what
happened; the state before says since when: an attempt in flight has a reply deadline,
``sent + timeout``, so its start is known without any lookup, in whichever process ends it.
So a span is exported exactly when its attempt ends:

- ``step <step>`` / ``compensate <step>``: one per attempt, from sent to reply or timeout;
- ``saga <name>``: the root, from start to ``completed``, ``compensated`` or ``failed``
  (exported again if an operator retries a failed saga and it ends again).

Only what was committed is observed, so a decision rolled back by a conflict is never
reported. Secret input values never reach an attribute or a status description.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import SpanKind

from orchestrator.core.effects import Record
from orchestrator.core.machine import Decision
from orchestrator.core.state import DeadlinePurpose, HistoryType, Kind, SagaState
from orchestrator.definitions.schema import REDACTED, secret_values
from orchestrator.store import OutboxMessage
from orchestrator.telemetry.identity import SagaTrace
from orchestrator.telemetry.setup import SpanRecord, Telemetry

log = logging.getLogger(__name__)

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_ENDS: dict[HistoryType, tuple[Kind, str]] = {
    HistoryType.STEP_SUCCEEDED: (Kind.ACTION, "succeeded"),
    HistoryType.STEP_FAILED: (Kind.ACTION, "failed"),
    HistoryType.STEP_TIMED_OUT: (Kind.ACTION, "timed_out"),
    HistoryType.COMPENSATION_SUCCEEDED: (Kind.COMPENSATION, "succeeded"),
    HistoryType.COMPENSATION_FAILED: (Kind.COMPENSATION, "failed"),
}
_SENT = (HistoryType.STEP_SENT, HistoryType.COMPENSATION_SENT)
_FINAL = {
    HistoryType.COMPLETED: "completed",
    HistoryType.COMPENSATED: "compensated",
    HistoryType.FAILED: "failed",
}


@dataclass(frozen=True)
class Observation:
    """One committed decision, with what the spans need to know about the saga."""

    before: SagaState | None
    """None for a saga that this decision started."""
    decision: Decision
    trace: SagaTrace
    created_at: datetime


class SagaTelemetry:
    """Spans and metrics for the orchestrator's sagas (no-op when telemetry is off)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.enabled = telemetry.tracing or telemetry.measuring
        meter = telemetry.meter
        self.started = meter.create_counter(
            "saga.started", unit="{saga}", description="Sagas started, by saga name"
        )
        self.ended = meter.create_counter(
            "saga.ended",
            unit="{saga}",
            description="Sagas that reached completed, compensated or failed, by name and outcome",
        )
        self.saga_duration = meter.create_histogram(
            "saga.duration",
            unit="s",
            description="Time from start to completed, compensated or failed",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.step_duration = meter.create_histogram(
            "saga.step.duration",
            unit="s",
            description="Time from sending an attempt to its reply or timeout",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.retries = meter.create_counter(
            "saga.step.retries", unit="{attempt}", description="Attempts after the first"
        )
        self.outbox_lag = meter.create_histogram(
            "saga.outbox.lag",
            unit="s",
            description="Time from the commit that wrote a message to the broker's confirm",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.timeouts = meter.create_counter(
            "saga.step.timeouts", unit="{attempt}", description="Attempts that got no reply in time"
        )

    def outbox_sent(self, messages: Sequence[OutboxMessage], now: datetime) -> None:
        """Record how long confirmed outbox rows waited between commit and confirm."""
        if not self.enabled:
            return
        for message in messages:
            if message.created_at is not None:
                lag = max((now - message.created_at).total_seconds(), 0.0)
                self.outbox_lag.record(lag, {"saga.message_type": message.type or "unknown"})

    def observe(self, observation: Observation, now: datetime) -> None:
        """Export the spans and count the metrics of one committed decision."""
        if not self.enabled:
            return
        try:
            _Observer(self, observation, now).run()
        except Exception:  # telemetry must never stop a saga
            log.exception(
                "recording telemetry for saga %s failed", observation.decision.state.saga_id
            )


class _Observer:
    def __init__(self, owner: SagaTelemetry, observation: Observation, now: datetime) -> None:
        self.owner = owner
        self.before = observation.before
        self.state = observation.decision.state
        self.decision = observation.decision
        self.trace = observation.trace
        self.created_at = observation.created_at
        self.now = now
        definition = self.state.definition
        self.name = definition.name
        self.base: dict[str, Any] = {
            "saga.id": self.state.saga_id,
            "saga.name": definition.name,
            "saga.version": definition.version,
        }
        self._secrets: list[str] | None = None

    def run(self) -> None:
        for effect in self.decision.effects:
            if not isinstance(effect, Record):
                continue
            if effect.type is HistoryType.STARTED:
                self.owner.started.add(1, {"saga.name": self.name})
            elif effect.type in _SENT and (effect.attempt or 0) > 1:
                kind = Kind.ACTION if effect.type is HistoryType.STEP_SENT else Kind.COMPENSATION
                labels = {"saga.name": self.name, "saga.step": effect.step, "saga.kind": kind}
                self.owner.retries.add(1, labels)
            elif effect.type in _ENDS:
                kind, outcome = _ENDS[effect.type]
                if effect.detail.get("code") == "timeout" and effect.attempt is not None:
                    outcome = "timed_out"  # a compensation's timeout is recorded as a failure
                if outcome == "timed_out":
                    labels = {"saga.name": self.name, "saga.step": effect.step, "saga.kind": kind}
                    self.owner.timeouts.add(1, labels)
                self.attempt_ended(effect, kind, outcome)
            elif effect.type is HistoryType.OPERATOR_ABORT and effect.step is not None:
                for kind in Kind:
                    self.attempt_ended(effect, kind, "aborted", any_attempt=True)
            elif effect.type in _FINAL:
                self.saga_ended(_FINAL[effect.type])

    def attempt_ended(
        self, record: Record, kind: Kind, outcome: str, *, any_attempt: bool = False
    ) -> None:
        """Export the span of the attempt in flight that ``record`` ended (if one was)."""
        if self.before is None or record.step is None:
            return
        found = self.before.step(record.step)
        if found is None:
            return
        index, step = found
        deadline = step.deadline
        if deadline is None or deadline.purpose is not DeadlinePurpose.REPLY:
            return
        if deadline.kind is not kind:
            return
        if kind is Kind.ACTION:
            attempt, key = step.attempts, self.before.action_key(index)
        else:
            attempt = step.compensation.attempts if step.compensation is not None else 0
            key = self.before.compensation_key(index)
        if attempt < 1:
            return
        if not any_attempt and record.attempt is not None and record.attempt != attempt:
            # An earlier attempt's success ended the step: the attempt in flight is moot.
            outcome = "superseded"
        definition = self.before.step_definition(index)
        sent = deadline.at - definition.timeout
        attributes = {
            **self.base,
            "saga.step": step.name,
            "saga.kind": kind.value,
            "saga.attempt": attempt,
            "saga.outcome": outcome,
            "saga.participant": definition.participant,
            "saga.command": (
                definition.command
                if kind is Kind.ACTION or definition.compensation is None
                else definition.compensation.command
            ),
            "messaging.system": "rabbitmq",
        }
        error = self.error_text(record.detail, outcome, definition.timeout)
        verb = "step" if kind is Kind.ACTION else "compensate"
        self.owner.telemetry.emit_span(
            SpanRecord(
                name=f"{verb} {step.name}",
                trace_id=self.trace.trace_id,
                span_id=self.trace.attempt_span_id(key, attempt),
                parent_span_id=self.trace.span_id,
                start=sent,
                end=self.now,
                attributes=attributes,
                kind=SpanKind.PRODUCER,
                error=error,
                sampled=self.trace.sampled,
            )
        )
        labels = {
            "saga.name": self.name,
            "saga.step": step.name,
            "saga.kind": kind.value,
            "saga.outcome": outcome,
        }
        self.owner.step_duration.record(max((self.now - sent).total_seconds(), 0.0), labels)

    def saga_ended(self, outcome: str) -> None:
        labels = {"saga.name": self.name, "saga.outcome": outcome}
        self.owner.ended.add(1, labels)
        elapsed = max((self.now - self.created_at).total_seconds(), 0.0)
        self.owner.saga_duration.record(elapsed, labels)
        error = None
        if outcome != "completed" and self.state.error is not None:
            cause = self.state.error
            where = f" (step {cause.step})" if cause.step else ""
            error = self.scrub(f"{outcome}: {cause.code}: {cause.message}{where}")
        elif outcome != "completed":
            error = outcome
        attributes = {**self.base, "saga.outcome": outcome}
        if self.state.error is not None and self.state.error.step is not None:
            attributes["saga.failed_step"] = self.state.error.step
        self.owner.telemetry.emit_span(
            SpanRecord(
                name=f"saga {self.name}",
                trace_id=self.trace.trace_id,
                span_id=self.trace.span_id,
                parent_span_id=self.trace.parent_span_id,
                start=self.created_at,
                end=self.now,
                attributes=attributes,
                kind=SpanKind.INTERNAL,
                error=error,
                sampled=self.trace.sampled,
            )
        )

    def error_text(self, detail: Mapping[str, Any], outcome: str, timeout: timedelta) -> str | None:
        if outcome == "timed_out":
            return f"no reply within {timeout.total_seconds():g}s"
        if outcome in ("succeeded", "superseded"):
            return None
        if outcome == "aborted":
            return "abandoned by an operator abort"
        code = detail.get("code", "failed")
        message = detail.get("message", "")
        return self.scrub(f"{code}: {message}" if message else str(code))

    def scrub(self, text: str) -> str:
        if self._secrets is None:
            self._secrets = secret_values(self.state.definition, self.state.input)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text
