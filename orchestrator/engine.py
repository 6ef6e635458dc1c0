"""The engine: applies start requests, replies, timers and operator actions to stored sagas.

Each input is handled in one store transaction that records the processed message id,
runs the pure state machine, writes the new state and its history, and puts the
commands to send in the outbox. The engine never publishes: after the commit it hands
the new outbox rows to ``on_commit`` (the relay publishes them at once), and the
relay's sweep publishes whatever a crash left behind.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from contracts import (
    Header,
    StartReply,
    StartRequest,
    StepCommand,
    StepReply,
    encode,
)
from orchestrator import crashpoints
from orchestrator.core.effects import Record, SendCommand
from orchestrator.core.events import Event, ReplyFailed, ReplySucceeded, TimerFired
from orchestrator.core.machine import Decision, decide, start
from orchestrator.core.state import Kind
from orchestrator.definitions.errors import UnknownDefinition
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.definitions.schema import validate_input
from orchestrator.errors import SagaError
from orchestrator.store import DuplicateSaga, OutboxMessage, SagaRecord, Store, UnitOfWork
from orchestrator.telemetry.identity import SagaTrace
from orchestrator.telemetry.sagas import Observation, SagaTelemetry
from orchestrator.telemetry.setup import Telemetry
from orchestrator.topology import COMMANDS_EXCHANGE, REPLY_QUEUE

log = logging.getLogger(__name__)

START_CONSUMER = "orchestrator.start"
REPLY_CONSUMER = "orchestrator.replies"
TIMER_BATCH = 100

Clock = Callable[[], datetime]
OnCommit = Callable[[Sequence[OutboxMessage]], None]


def utc_now() -> datetime:
    """The real clock (UTC, timezone-aware)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A new random id (saga ids and message ids)."""
    return str(uuid.uuid4())


class UnknownSaga(SagaError):
    """No saga has this id."""


class OperatorRefused(SagaError):
    """The saga's state does not allow the operator action."""


@dataclass(frozen=True)
class Engine:
    """Moves sagas; see the module docstring."""

    store: Store
    registry: DefinitionRegistry
    on_commit: OnCommit
    clock: Clock = utc_now
    ids: Callable[[], str] = new_id
    telemetry: SagaTelemetry = field(default_factory=lambda: SagaTelemetry(Telemetry.off()))
    """Spans and metrics of every committed decision (see :mod:`orchestrator.telemetry`)."""

    # -- start ------------------------------------------------------------------

    async def start(self, request: StartRequest, *, reply_to: str | None) -> StartReply | None:
        """Create the saga a start request asks for (or find the one its key names).

        Returns the reply for the starter, which is also queued in the outbox when
        ``reply_to`` is set; None when this request was already handled (its reply
        went out with the first handling)."""
        now = self.clock()
        refusal = self._check_start(request)
        if refusal is not None:
            # refused() shortens a long message (many input problems) to fit the wire.
            reply = StartReply.refused(
                request, *refusal, message_id=self.ids(), trace=request.trace
            )
            await self._send_outside_saga(reply, reply_to, now)
            return reply
        definition = self.registry.get(request.saga_name, request.saga_version)
        outbox: list[OutboxMessage] = []
        observation: Observation | None = None
        async with self.store.transaction() as uow:
            if not await uow.mark_processed(START_CONSUMER, request.message_id, now):
                return None
            existing = None
            if request.idempotency_key is not None:
                existing = await uow.find_by_key(definition.name, request.idempotency_key)
            if existing is None:
                saga_id = self.ids()
                decision = start(saga_id, definition, request.input, now)
                trace = SagaTrace.begin(saga_id, request.trace)
                try:
                    await uow.insert(
                        decision.state,
                        idempotency_key=request.idempotency_key,
                        trace_context=trace.to_stored(),
                        now=now,
                    )
                except DuplicateSaga:
                    # Another orchestrator started this key between our lookup and our
                    # insert; it has committed, so the lookup now finds its saga.
                    if request.idempotency_key is None:
                        raise
                    existing = await uow.find_by_key(definition.name, request.idempotency_key)
                    if existing is None:
                        raise
                else:
                    outbox.extend(await self._apply_effects(uow, saga_id, decision, trace, now))
                    observation = Observation(None, decision, trace, now)
                    reply = self._accepted(request, saga_id, created=True)
            if existing is not None:
                reply = self._accepted(request, existing, created=False)
            if reply_to:
                reply_message = self._reply_message(reply, reply_to)
                ids = await uow.enqueue([reply_message], now)
                outbox.append(_with_id(reply_message, ids[0], now))
        self._committed(outbox)
        if observation is not None:
            self.telemetry.observe(observation, now)
        return reply

    def _check_start(self, request: StartRequest) -> tuple[str, str] | None:
        """Why the start must be refused, as (code, sentence); None to go ahead."""
        try:
            definition = self.registry.get(request.saga_name, request.saga_version)
        except UnknownDefinition as exc:
            return "unknown_saga", str(exc)
        problems = validate_input(definition, request.input)
        if problems:
            message = f"input for saga '{definition.name}' is invalid: " + "; ".join(problems)
            return "invalid_input", message
        return None

    def _accepted(self, request: StartRequest, saga_id: str, *, created: bool) -> StartReply:
        return StartReply.accepted(
            request, saga_id, created=created, message_id=self.ids(), trace=request.trace
        )

    def _reply_message(self, reply: StartReply, reply_to: str) -> OutboxMessage:
        wire = encode(reply)
        return OutboxMessage(
            message_id=wire.message_id,
            exchange="",
            routing_key=reply_to,
            body=wire.body,
            headers=dict(wire.headers),
            content_type=wire.content_type,
            correlation_id=wire.correlation_id,
            type=wire.type,
            saga_id=reply.saga_id,
        )

    async def _send_outside_saga(
        self, reply: StartReply, reply_to: str | None, now: datetime
    ) -> None:
        if not reply_to:
            return
        message = self._reply_message(reply, reply_to)
        async with self.store.transaction() as uow:
            ids = await uow.enqueue([message], now)
        self._committed([_with_id(message, ids[0], now)])

    # -- replies and timers -----------------------------------------------------

    async def on_reply(self, reply: StepReply) -> Decision | None:
        """Apply a participant's reply; None if it was a duplicate message or an unknown saga."""
        event: Event
        kind = Kind(reply.kind)
        if reply.outcome == "success":
            event = ReplySucceeded(
                reply.step, kind, reply.attempt, reply.idempotency_key, reply.result
            )
        else:
            assert reply.error is not None
            event = ReplyFailed(
                reply.step,
                kind,
                reply.attempt,
                reply.idempotency_key,
                reply.error.code,
                reply.error.message,
                reply.error.retryable,
            )
        now = self.clock()
        async with self.store.transaction() as uow:
            if not await uow.mark_processed(REPLY_CONSUMER, reply.message_id, now):
                log.info("reply %s was applied before; this copy is dropped", reply.message_id)
                return None
            record = await uow.load(reply.saga_id)
            if record is None:
                log.warning(
                    "reply for unknown saga %s (step %s) dropped", reply.saga_id, reply.step
                )
                return None
            decision = decide(record.state, event, now)
            outbox, observation = await self._save(uow, record, decision, now)
            crashpoints.crash("orchestrator.before_reply_commit")
        self._committed(outbox)
        self.telemetry.observe(observation, now)
        return decision

    async def fire_due(self, limit: int = TIMER_BATCH) -> int:
        """Act on deadlines that have passed; returns how many were claimed."""
        now = self.clock()
        outbox: list[OutboxMessage] = []
        observations: list[Observation] = []
        async with self.store.transaction() as uow:
            due = await uow.claim_due(now, limit)
            for timer in due:
                record = await uow.load(timer.saga_id)
                if record is None:
                    continue
                event = TimerFired(timer.step, timer.kind, timer.attempt, timer.purpose)
                decision = decide(record.state, event, now)
                messages, observation = await self._save(uow, record, decision, now)
                outbox.extend(messages)
                observations.append(observation)
        self._committed(outbox)
        for observation in observations:
            self.telemetry.observe(observation, now)
        return len(due)

    async def operate(self, saga_id: str, event: Event) -> Decision:
        """Apply an operator action; :class:`OperatorRefused` with the reason if not allowed."""
        now = self.clock()
        async with self.store.transaction() as uow:
            record = await uow.load(saga_id)
            if record is None:
                raise UnknownSaga(f"no saga with id {saga_id}")
            decision = decide(record.state, event, now)
            if decision.refusal is not None:
                raise OperatorRefused(decision.refusal)
            outbox, observation = await self._save(uow, record, decision, now)
        self._committed(outbox)
        self.telemetry.observe(observation, now)
        return decision

    # -- writing ----------------------------------------------------------------

    def _committed(self, outbox: Sequence[OutboxMessage]) -> None:
        """Hand freshly committed outbox rows to the relay."""
        if not outbox:
            return
        crashpoints.crash("orchestrator.after_commit_before_publish")
        if any(m.headers.get(Header.SAGA_KIND) == "compensation" for m in outbox):
            crashpoints.crash("orchestrator.mid_compensation")
        self.on_commit(outbox)

    async def _save(
        self, uow: UnitOfWork, record: SagaRecord, decision: Decision, now: datetime
    ) -> tuple[list[OutboxMessage], Observation]:
        """Write the decision; the messages to publish and what to observe after the commit."""
        if decision.changed:
            await uow.update(decision.state, expected_version=record.version, now=now)
        saga_id = record.state.saga_id
        trace = SagaTrace.stored(saga_id, record.trace_context)
        outbox = await self._apply_effects(uow, saga_id, decision, trace, now)
        return outbox, Observation(record.state, decision, trace, record.created_at)

    async def _apply_effects(
        self,
        uow: UnitOfWork,
        saga_id: str,
        decision: Decision,
        trace: SagaTrace,
        now: datetime,
    ) -> list[OutboxMessage]:
        records = [effect for effect in decision.effects if isinstance(effect, Record)]
        if records:
            await uow.append_history(saga_id, records, now)
        commands = [
            self._command_message(decision, effect, trace)
            for effect in decision.effects
            if isinstance(effect, SendCommand)
        ]
        if not commands:
            return []
        ids = await uow.enqueue(commands, now)
        return [
            _with_id(message, row_id, now) for message, row_id in zip(commands, ids, strict=True)
        ]

    def _command_message(
        self, decision: Decision, effect: SendCommand, trace: SagaTrace
    ) -> OutboxMessage:
        state = decision.state
        command = StepCommand(
            message_id=self.ids(),
            saga_id=state.saga_id,
            saga_name=state.definition.name,
            saga_version=state.definition.version,
            step=effect.step,
            kind=effect.kind.value,
            command=effect.command,
            attempt=effect.attempt,
            idempotency_key=effect.idempotency_key,
            action_key=effect.action_key,
            payload=effect.payload,
            trace=trace.command_context(effect.idempotency_key, effect.attempt),
        )
        wire = encode(command)
        return OutboxMessage(
            message_id=wire.message_id,
            exchange=COMMANDS_EXCHANGE,
            routing_key=effect.participant,
            body=wire.body,
            headers=dict(wire.headers),
            content_type=wire.content_type,
            correlation_id=wire.correlation_id,
            reply_to=REPLY_QUEUE,
            type=wire.type,
            saga_id=state.saga_id,
        )


def _with_id(message: OutboxMessage, row_id: int, now: datetime) -> OutboxMessage:
    return replace(message, id=row_id, created_at=now)
