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
from orchestrator.core.events import DeadlinePassed, Event, ReplyFailed, ReplySucceeded, TimerFired
from orchestrator.core.machine import Decision, decide, start
from orchestrator.core.replies import expects_reply
from orchestrator.core.state import Kind, SagaState
from orchestrator.definitions.errors import UnknownDefinition
from orchestrator.definitions.model import SagaDefinition
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.definitions.schema import validate_input
from orchestrator.errors import SagaError
from orchestrator.store import (
    DuplicateSaga,
    NewSaga,
    OutboxMessage,
    SagaRecord,
    Store,
    Transition,
    UnitOfWork,
)
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
        if request.idempotency_key is not None:
            created = await self._create(request, definition, reply_to, now)
            if created is not None:
                return created
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
                    history, commands = self._effects(decision, trace)
                    await uow.append_history(saga_id, history, now)
                    outbox.extend(_stored(commands, await uow.enqueue(commands, now), now))
                    observation = Observation(None, decision, trace, now)
                    reply = self._accepted(request, saga_id, created=True)
            if existing is not None:
                reply = self._accepted(request, existing, created=False)
            if reply_to:
                reply_message = self._reply_message(reply, reply_to)
                ids = await uow.enqueue([reply_message], now)
                outbox.extend(_stored([reply_message], ids, now))
        self._committed(outbox)
        if observation is not None:
            self.telemetry.observe(observation, now)
        return reply

    async def _create(
        self, request: StartRequest, definition: SagaDefinition, reply_to: str | None, now: datetime
    ) -> StartReply | None:
        """Start a keyed saga in one write when its key is free and the request is new;
        None when that is not so (the transaction in :meth:`start` then sorts it out)."""
        assert request.idempotency_key is not None
        saga_id = self.ids()
        decision = start(saga_id, definition, request.input, now)
        trace = SagaTrace.begin(saga_id, request.trace)
        history, messages = self._effects(decision, trace)
        reply = self._accepted(request, saga_id, created=True)
        if reply_to:
            messages.append(self._reply_message(reply, reply_to))
        saga = NewSaga(
            state=decision.state,
            idempotency_key=request.idempotency_key,
            trace_context=trace.to_stored(),
            history=history,
            outbox=messages,
            inbox=(START_CONSUMER, request.message_id),
            now=now,
        )
        ids = await self.store.create(saga)
        if ids is None:
            return None
        self._committed(_stored(messages, ids, now))
        self.telemetry.observe(Observation(None, decision, trace, now), now)
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
        self._committed(_stored([message], ids, now))

    # -- replies and timers -----------------------------------------------------

    async def on_reply(
        self, reply: StepReply, *, check: Callable[[SagaState], None] | None = None
    ) -> Decision | None:
        """Apply a participant's reply; None if it was a duplicate message or an unknown saga.

        ``check`` sees the saga before anything is decided and may refuse the reply by
        raising (the sender check of ``SAGA_REPLY_USERS``)."""
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
        inbox = (REPLY_CONSUMER, reply.message_id)
        now = self.clock()
        snapshot = await self.store.snapshot(
            reply.saga_id,
            inbox=inbox,
            expects=lambda state: expects_reply(state, reply.step, kind, reply.attempt),
        )
        record = snapshot.record
        if snapshot.processed:
            log.info("reply %s was applied before; this copy is dropped", reply.message_id)
            return None
        if record is None:
            log.warning("reply for unknown saga %s (step %s) dropped", reply.saga_id, reply.step)
            return None
        if check is not None:
            check(record.state)
        decision = decide(record.state, event, now)
        transition, trace = self._transition(record, decision, now, snapshot.last_seq, inbox)
        crashpoints.crash("orchestrator.before_reply_commit")
        ids = await self.store.apply(transition)
        if ids is None:
            log.info("reply %s was applied meanwhile; this copy is dropped", reply.message_id)
            return None
        self._committed(_stored(transition.outbox, ids, now))
        self.telemetry.observe(Observation(record.state, decision, trace, record.created_at), now)
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
            sagas = await uow.claim_due_sagas(now, limit - len(due))
            for saga_id in sagas:
                record = await uow.load(saga_id)
                if record is None:
                    continue
                decision = decide(record.state, DeadlinePassed(), now)
                messages, observation = await self._save(uow, record, decision, now)
                outbox.extend(messages)
                observations.append(observation)
        self._committed(outbox)
        for observation in observations:
            self.telemetry.observe(observation, now)
        return len(due) + len(sagas)

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
        transition, trace = self._transition(record, decision, now)
        ids = await uow.apply(transition)
        assert ids is not None  # no inbox row to collide with
        outbox = _stored(transition.outbox, ids, now)
        return outbox, Observation(record.state, decision, trace, record.created_at)

    def _transition(
        self,
        record: SagaRecord,
        decision: Decision,
        now: datetime,
        last_seq: int | None = None,
        inbox: tuple[str, str] | None = None,
    ) -> tuple[Transition, SagaTrace]:
        trace = SagaTrace.stored(record.state.saga_id, record.trace_context)
        history, commands = self._effects(decision, trace)
        transition = Transition(
            before=record,
            after=decision.state,
            history=history,
            outbox=commands,
            now=now,
            last_seq=last_seq,
            inbox=inbox,
        )
        return transition, trace

    def _effects(
        self, decision: Decision, trace: SagaTrace
    ) -> tuple[list[Record], list[OutboxMessage]]:
        """The decision's history records and the messages of its commands."""
        records = [effect for effect in decision.effects if isinstance(effect, Record)]
        commands = [
            self._command_message(decision, effect, trace)
            for effect in decision.effects
            if isinstance(effect, SendCommand)
        ]
        return records, commands

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


def _stored(
    messages: Sequence[OutboxMessage], ids: Sequence[int], now: datetime
) -> list[OutboxMessage]:
    """The messages as the outbox holds them (row id and creation time set)."""
    return [
        replace(message, id=row_id, created_at=now)
        for message, row_id in zip(messages, ids, strict=True)
    ]
