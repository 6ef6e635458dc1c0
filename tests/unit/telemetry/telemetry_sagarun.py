"""A saga driven through the pure state machine with every decision observed, as the engine
does after each commit, and the spans it exports drawn as a tree (compared as text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from telemetry_capture import hex_parent, hex_span, nanos

from contracts import TraceContext
from orchestrator.core.effects import SendCommand
from orchestrator.core.events import Event, ReplyFailed, ReplySucceeded, TimerFired
from orchestrator.core.machine import Decision, decide, start
from orchestrator.core.state import JSON, DeadlinePurpose, Kind, SagaState
from orchestrator.definitions import SagaDefinition
from orchestrator.telemetry.identity import SagaTrace
from orchestrator.telemetry.sagas import Observation, SagaTelemetry
from orchestrator.telemetry.setup import Telemetry

__all__ = ["T0", "Run", "Sent", "tree"]

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
"""When every saga here starts."""


@dataclass(frozen=True)
class Sent:
    """A command a decision sent, and when."""

    command: SendCommand
    at: datetime


@dataclass
class Run:
    """One saga driven through the pure machine, each decision observed as if committed."""

    observer: SagaTelemetry
    trace: SagaTrace
    state: SagaState
    created_at: datetime
    now: datetime
    sent: dict[tuple[str, int], Sent] = field(default_factory=dict)

    @classmethod
    def begin(
        cls,
        telemetry: Telemetry,
        definition: SagaDefinition,
        input: JSON,
        *,
        saga_id: str = "saga-1",
        starter: TraceContext | None = None,
    ) -> Run:
        """Start a saga at T0 and observe its first decision."""
        decision = start(saga_id, definition, input, T0)
        run = cls(
            observer=SagaTelemetry(telemetry),
            trace=SagaTrace.begin(saga_id, starter),
            state=decision.state,
            created_at=T0,
            now=T0,
        )
        run.commit(None, decision)
        return run

    def commit(self, before: SagaState | None, decision: Decision) -> None:
        """Keep what ``decision`` sent and hand it to the observer, as the engine's commit."""
        for effect in decision.effects:
            if isinstance(effect, SendCommand):
                self.sent[(effect.idempotency_key, effect.attempt)] = Sent(effect, self.now)
        self.state = decision.state
        self.observer.observe(Observation(before, decision, self.trace, self.created_at), self.now)

    def feed(self, event: Event, *, after: float = 0.0) -> Decision:
        """Apply ``event`` ``after`` seconds from now and observe the decision."""
        self.now += timedelta(seconds=after)
        before = self.state
        decision = decide(before, event, self.now)
        self.commit(before, decision)
        return decision

    def in_flight(self, step: str, kind: Kind) -> SendCommand:
        """The last command sent for ``step``'s action or compensation."""
        found = [
            s.command
            for s in self.sent.values()
            if (s.command.step, s.command.kind) == (step, kind)
        ]
        assert found, f"nothing was sent for {kind.value} {step}"
        return found[-1]

    def succeed(
        self, step: str, *, after: float, kind: Kind = Kind.ACTION, attempt: int | None = None
    ) -> Decision:
        """The participant answers the attempt in flight (or ``attempt``) with success."""
        command = self.in_flight(step, kind)
        return self.feed(
            ReplySucceeded(
                step=step,
                kind=kind,
                attempt=command.attempt if attempt is None else attempt,
                idempotency_key=command.idempotency_key,
                result={},
            ),
            after=after,
        )

    def fail(
        self,
        step: str,
        *,
        after: float,
        retryable: bool,
        code: str = "boom",
        message: str = "it broke",
        kind: Kind = Kind.ACTION,
    ) -> Decision:
        """The participant answers the attempt in flight with a failure."""
        command = self.in_flight(step, kind)
        return self.feed(
            ReplyFailed(
                step=step,
                kind=kind,
                attempt=command.attempt,
                idempotency_key=command.idempotency_key,
                code=code,
                message=message,
                retryable=retryable,
            ),
            after=after,
        )

    def fire(self, step: str, purpose: DeadlinePurpose) -> Decision:
        """Move the clock to the step's deadline and let it fire."""
        found = self.state.step(step)
        assert found is not None
        _, state = found
        deadline = state.deadline
        assert deadline is not None, f"step {step} has no deadline"
        assert deadline.purpose is purpose, f"step {step} waits for {deadline.purpose}"
        attempt = (
            state.attempts
            if deadline.kind is Kind.ACTION
            else (state.compensation.attempts if state.compensation is not None else 0)
        )
        self.now = max(self.now, deadline.at)
        return self.feed(TimerFired(step, deadline.kind, attempt, purpose))

    def span_id_sent(self, key: str, attempt: int) -> str:
        """The parent id in the traceparent the command for ``key``/``attempt`` carried."""
        command = self.sent[(key, attempt)].command
        context = self.trace.command_context(command.idempotency_key, command.attempt)
        return context.traceparent.split("-")[2]


def tree(spans: list[ReadableSpan], origin: datetime) -> str:
    """The spans as an indented tree, times in seconds from ``origin``."""
    ids = {hex_span(span) for span in spans}
    children: dict[str | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = hex_parent(span)
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def seconds(at: int | None) -> str:
        assert at is not None
        return f"{(at - nanos(origin)) / 1e9:g}s"

    def visit(span: ReadableSpan, depth: int) -> None:
        attributes = dict(span.attributes or {})
        attempt = f" #{attributes['saga.attempt']}" if "saga.attempt" in attributes else ""
        status = "ERROR" if span.status.status_code is StatusCode.ERROR else "ok"
        lines.append(
            f"{'  ' * depth}{span.name}{attempt} {attributes.get('saga.outcome')}"
            f" {seconds(span.start_time)}..{seconds(span.end_time)} {status}"
        )
        ordered = sorted(children.get(hex_span(span), []), key=lambda s: s.start_time or 0)
        for child in ordered:
            visit(child, depth + 1)

    for root in children.get(None, []):
        visit(root, 0)
    return "\n".join(lines)
