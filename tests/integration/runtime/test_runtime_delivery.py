"""End to end on the real broker and both databases: at-least-once delivery made harmless.

Slow attempts, duplicate, late and stray replies, redelivered commands, a compensation that
overtakes its action, poison input, a command nobody handles, and a graceful participant
stop (PRODUCT.md "Semantics", "Participant SDK" and "Wire"). Hand-made messages go through
aio-pika directly, with publisher confirms; replies to hand-made commands come back on the
test's own exclusive queue.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aio_pika
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from harness import Rig
from pamqp.common import FieldValue
from testapp import INVOCATIONS, trio_input, trio_yaml

from contracts import MAX_BODY_BYTES, Message, StartRequest, StepCommand, StepReply, decode, encode
from orchestrator.core.machine import Decision
from orchestrator.core.state import HistoryType, SagaState, SagaStatus, StepStatus
from orchestrator.engine import REPLY_CONSUMER, Engine
from orchestrator.service import OrchestratorService
from orchestrator.store import HistoryEntry
from orchestrator.stores import tables
from orchestrator.topology import (
    COMMANDS_EXCHANGE,
    REPLY_QUEUE,
    START_QUEUE,
    dead_letter_queue,
    participant_queue,
)
from participants.runtime import _reply_id

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""For bad input, refused before any query: one database is enough (and saves a rig)."""

REASON = "x-dead-letter-reason"


# -- helpers ----------------------------------------------------------------------------


def _new_id() -> str:
    return str(uuid.uuid4())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Hand:
    """Hand-made messages on one vhost: publish with confirms, read replies and dead letters."""

    def __init__(self, connection: AbstractConnection, channel: AbstractChannel) -> None:
        self.connection = connection
        self.channel = channel
        self.reply_to = ""
        self._arrived: asyncio.Queue[StepReply] = asyncio.Queue()
        self._held: list[StepReply] = []

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[Hand]:
        """Connect, with an exclusive queue of our own for replies to hand-made commands."""
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            hand = cls(connection, channel)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.consume(hand._on_reply, no_ack=True)
            hand.reply_to = queue.name
            yield hand
        finally:
            await connection.close()

    async def _on_reply(self, incoming: AbstractIncomingMessage) -> None:
        self._arrived.put_nowait(decode(incoming.body, incoming.headers, expect=StepReply))

    async def publish(
        self,
        body: bytes,
        *,
        routing_key: str,
        exchange: str = "",
        message_id: str | None = None,
        headers: Mapping[str, object] | None = None,
        type: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        """Publish persistent and mandatory; returns once the broker confirmed it."""
        if exchange:
            target = await self.channel.get_exchange(exchange, ensure=False)
        else:
            target = self.channel.default_exchange
        message = aio_pika.Message(
            body,
            headers={key: cast(FieldValue, value) for key, value in (headers or {}).items()},
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            type=type,
            correlation_id=correlation_id,
            reply_to=reply_to,
        )
        await target.publish(message, routing_key=routing_key, mandatory=True)

    async def send(
        self, message: Message, *, routing_key: str, exchange: str = "", reply_to: str | None = None
    ) -> None:
        """Publish a contract message as the product would (``contracts.encode``)."""
        wire = encode(message)
        await self.publish(
            wire.body,
            routing_key=routing_key,
            exchange=exchange,
            message_id=wire.message_id,
            headers=wire.headers,
            type=wire.type,
            correlation_id=wire.correlation_id,
            reply_to=reply_to,
        )

    async def command(self, command: StepCommand, participant: str) -> None:
        """Send a step command to ``participant``, answered to our own queue."""
        await self.send(
            command, exchange=COMMANDS_EXCHANGE, routing_key=participant, reply_to=self.reply_to
        )

    async def reply_for(self, key: str, *, within: float = 20.0) -> StepReply:
        """The next reply to a hand-made command under idempotency key ``key``."""
        try:
            async with asyncio.timeout(within):
                while True:
                    for reply in self._held:
                        if reply.idempotency_key == key:
                            self._held.remove(reply)
                            return reply
                    self._held.append(await self._arrived.get())
        except TimeoutError:
            raise AssertionError(f"no reply for {key} within {within}s") from None

    def replies_received(self) -> int:
        """Replies that arrived and were not taken yet."""
        return len(self._held) + self._arrived.qsize()

    async def ready(self, queue: str) -> int:
        """Messages waiting in ``queue`` (not counting deliveries in a consumer's hands)."""
        declared = await self.channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.message_count is not None
        return declared.declaration_result.message_count

    async def dead_letters(
        self, queue: str, count: int, *, within: float = 20.0
    ) -> list[AbstractIncomingMessage]:
        """Exactly ``count`` messages from ``<queue>.dlq`` (fails on fewer, or on more)."""
        dlq = await self.channel.declare_queue(dead_letter_queue(queue), passive=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        found: list[AbstractIncomingMessage] = []
        while len(found) < count:
            message = await dlq.get(no_ack=True, fail=False)
            if message is not None:
                found.append(message)
                continue
            if loop.time() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} dead letters in {dlq.name} after {within}s"
                )
            await asyncio.sleep(0.05)
        extra = await dlq.get(no_ack=True, fail=False)
        assert extra is None, f"more than {count} dead letters in {dlq.name}: {extra.body[:200]!r}"
        return found


class ReplySpy:
    """Stands in for the orchestrator's engine to see what became of each reply: the
    decision, or None for a duplicate message or an unknown saga (nothing else shows that)."""

    def __init__(self, service: OrchestratorService) -> None:
        self._engine = service.engine
        self._outcomes: dict[str, list[Decision | None]] = {}
        self._arrived = asyncio.Condition()
        service.engine = cast(Engine, self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def on_reply(
        self, reply: StepReply, *, check: Callable[[SagaState], None] | None = None
    ) -> Decision | None:
        outcome = await self._engine.on_reply(reply, check=check)
        async with self._arrived:
            self._outcomes.setdefault(reply.message_id, []).append(outcome)
            self._arrived.notify_all()
        return outcome

    def count(self, message_id: str) -> int:
        """How many times a reply with this message id was handled."""
        return len(self._outcomes.get(message_id, []))

    async def outcome(
        self, message_id: str, *, occurrence: int = 1, within: float = 20.0
    ) -> Decision | None:
        """What the ``occurrence``-th delivery of ``message_id`` did (waits for it)."""
        try:
            async with asyncio.timeout(within), self._arrived:
                await self._arrived.wait_for(lambda: self.count(message_id) >= occurrence)
        except TimeoutError:
            raise AssertionError(
                f"reply {message_id} not handled {occurrence} time(s) within {within}s"
            ) from None
        return self._outcomes[message_id][occurrence - 1]


@asynccontextmanager
async def running_rig(
    tmp_path: Path,
    amqp_url: str,
    database_url: str,
    participant_database_url: str,
    *,
    definition: str,
) -> AsyncIterator[Rig]:
    """Like the ``rig`` fixture, with another definition of the trio saga."""
    rig = await Rig.create(
        tmp_path, amqp_url, database_url, participant_database_url, definition=definition
    )
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        yield rig
    finally:
        await rig.close()


def _effects(rows: Sequence[sa.Row[Any]], saga_id: str) -> list[tuple[str, str]]:
    return [(row.step, row.kind) for row in rows if row.saga_id == saga_id]


def _all_effects(rows: Sequence[sa.Row[Any]]) -> list[tuple[str, str, str, str]]:
    return [(row.participant, row.saga_id, row.step, row.kind) for row in rows]


async def _history(rig: Rig, saga_id: str) -> list[HistoryEntry]:
    return await (await rig.reader()).history(saga_id)


async def _history_until(
    rig: Rig,
    saga_id: str,
    done: Callable[[list[HistoryEntry]], bool],
    *,
    within: float = 20.0,
) -> list[HistoryEntry]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        entries = await _history(rig, saga_id)
        if done(entries):
            return entries
        if loop.time() > deadline:
            shown = [(entry.type, entry.step, entry.attempt) for entry in entries]
            raise AssertionError(f"history of {saga_id} never got there: {shown}")
        await asyncio.sleep(0.05)


async def _until(condition: Callable[[], bool], what: str, *, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.02)


async def _sent_commands(rig: Rig, saga_id: str) -> dict[tuple[str, str, int], sa.Row[Any]]:
    """The outbox rows of the commands the orchestrator sent for a saga, by (step, kind,
    attempt): exactly what went on the wire."""
    store = await rig.reader()
    statement = sa.select(tables.outbox).where(
        tables.outbox.c.saga_id == saga_id, tables.outbox.c.type == "saga.command"
    )
    async with store.engine.connect() as conn:
        rows = list(await conn.execute(statement))
    commands: dict[tuple[str, str, int], sa.Row[Any]] = {}
    for row in rows:
        command = decode(row.body, row.headers, expect=StepCommand)
        commands[command.step, command.kind, command.attempt] = row
    return commands


def _command(row: sa.Row[Any]) -> StepCommand:
    return decode(row.body, row.headers, expect=StepCommand)


async def _processed_reply_ids(rig: Rig) -> set[str]:
    store = await rig.reader()
    processed = tables.processed_messages
    statement = sa.select(processed.c.message_id).where(processed.c.consumer == REPLY_CONSUMER)
    async with store.engine.connect() as conn:
        return set((await conn.execute(statement)).scalars())


def _hand_command(
    saga_id: str, step: str, kind: str, command: str, payload: dict[str, Any], attempt: int = 1
) -> StepCommand:
    action_key = f"{saga_id}:{step}:action"
    return StepCommand(
        message_id=_new_id(),
        saga_id=saga_id,
        saga_name="trio",
        saga_version=1,
        step=step,
        kind="action" if kind == "action" else "compensation",
        command=command,
        attempt=attempt,
        idempotency_key=f"{saga_id}:{step}:{kind}",
        action_key=None if kind == "action" else action_key,
        payload=payload,
    )


# -- timeouts -----------------------------------------------------------------------------


async def test_first_attempt_slower_than_the_timeout_takes_effect_once(
    tmp_path: Path, amqp_url: str, database_url: str, participant_database_url: str
) -> None:
    definition = trio_yaml(timeout="1s")
    async with running_rig(
        tmp_path, amqp_url, database_url, participant_database_url, definition=definition
    ) as rig:
        [saga_id] = await rig.start([trio_input(a={"delay_first": 1.6})])
        record = (await rig.wait_terminal([saga_id]))[saga_id]
        assert record.state.status is SagaStatus.COMPLETED
        step_a = record.state.steps[0]
        assert step_a.attempts >= 2, "the first attempt should have timed out"
        assert _effects(await rig.effects(), saga_id).count(("a", "action")) == 1

        # Every attempt is answered (the same success); one is accepted, the rest ignored.
        def all_answered(entries: list[HistoryEntry]) -> bool:
            ignored = [e for e in entries if e.type == HistoryType.REPLY_IGNORED and e.step == "a"]
            return len(ignored) == step_a.attempts - 1

        history = await _history_until(rig, saga_id, all_answered)
        alpha = rig.participants["alpha"]
        assert alpha.handler_runs == 1, "later attempts must be answered from the inbox"
        assert alpha.inbox_answers == step_a.attempts - 1
        events = [(entry.type, entry.attempt) for entry in history if entry.step == "a"]
        assert events[:3] == [
            (HistoryType.STEP_SENT, 1),
            (HistoryType.STEP_TIMED_OUT, 1),
            (HistoryType.STEP_SENT, 2),
        ]
        types = [event_type for event_type, _ in events]
        assert types.count(HistoryType.STEP_SUCCEEDED) == 1
        assert types.index(HistoryType.STEP_SUCCEEDED) > types.index(HistoryType.STEP_TIMED_OUT)
        for entry in history:
            if entry.type == HistoryType.REPLY_IGNORED:
                assert entry.detail["outcome"] == "success"


# -- replies the saga is not waiting for ---------------------------------------------------


async def test_duplicate_and_late_replies_are_ignored(rig: Rig) -> None:
    spy = ReplySpy(rig.orchestrators[0])
    [saga_id] = await rig.start([trio_input(b={"fail_times": 1})])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED
    store = await rig.reader()
    before = await _history(rig, saga_id)
    sent = await _sent_commands(rig, saga_id)

    async with Hand.open(rig.amqp_url) as hand:
        # The very reply gamma sent for step c, delivered again: dropped by its message id.
        command_c = _command(sent["c", "action", 1])
        result = {"by": "gamma", "step": "c", "kind": "action"}
        original = StepReply.success(command_c, result, message_id=_reply_id(command_c))
        assert original.message_id in await _processed_reply_ids(rig)
        seen = spy.count(original.message_id)
        assert seen >= 1
        await hand.send(original, routing_key=REPLY_QUEUE)
        assert await spy.outcome(original.message_id, occurrence=seen + 1) is None
        assert await _history(rig, saga_id) == before
        again = await store.get(saga_id)
        assert again is not None
        assert again.version == record.version

        # The same answer as a new message: recorded as ignored, nothing else moves.
        copy = original.model_copy(update={"message_id": _new_id()})
        await hand.send(copy, routing_key=REPLY_QUEUE)
        decision = await spy.outcome(copy.message_id)
        assert decision is not None
        assert not decision.changed
        after = await _history(rig, saga_id)
        assert after[:-1] == before
        assert (after[-1].type, after[-1].step, after[-1].attempt) == (
            HistoryType.REPLY_IGNORED,
            "c",
            1,
        )
        assert after[-1].detail["outcome"] == "success"

        # Attempt 1 of b failed (retryably) and attempt 2 succeeded; a failure for attempt 1
        # arriving now is late: ignored, b stays succeeded.
        command_b1 = _command(sent["b", "action", 1])
        late = StepReply.failure(command_b1, "flaky", "beta, late", True, message_id=_new_id())
        await hand.send(late, routing_key=REPLY_QUEUE)
        decision = await spy.outcome(late.message_id)
        assert decision is not None
        assert not decision.changed
        final = await _history(rig, saga_id)
        assert final[:-1] == after
        last = final[-1]
        assert (last.type, last.step, last.attempt) == (HistoryType.REPLY_IGNORED, "b", 1)
        assert last.detail["outcome"] == "failure"
        assert "not the one in flight" in str(last.detail["reason"])

    end = await store.get(saga_id)
    assert end is not None
    # Each ignored message moved only the version (a decision taken on an older read then
    # fails); the state and its time stay as they were.
    assert end.version == record.version + 2
    assert end.updated_at == record.updated_at
    assert end.state == record.state
    assert end.state.steps[1].status is StepStatus.SUCCEEDED


async def test_reply_for_an_unknown_saga_is_dropped_and_replies_keep_flowing(rig: Rig) -> None:
    spy = ReplySpy(rig.orchestrators[0])
    stray_saga = f"no-such-saga-{_new_id()}"
    stray = StepReply(
        message_id=_new_id(),
        saga_id=stray_saga,
        step="a",
        kind="action",
        attempt=1,
        idempotency_key=f"{stray_saga}:a:action",
        outcome="success",
        result={"by": "nobody"},
    )
    async with Hand.open(rig.amqp_url) as hand:
        await hand.send(stray, routing_key=REPLY_QUEUE)
        assert await spy.outcome(stray.message_id) is None
        store = await rig.reader()
        assert await store.get(stray_saga) is None
        assert await store.history(stray_saga) == []

        [saga_id] = await rig.start([trio_input()])
        record = (await rig.wait_terminal([saga_id]))[saga_id]
        assert record.state.status is SagaStatus.COMPLETED
        assert await hand.ready(REPLY_QUEUE) == 0
        assert await hand.ready(dead_letter_queue(REPLY_QUEUE)) == 0, "dropped, not dead-lettered"


# -- the participant's inbox ---------------------------------------------------------------


async def test_redelivered_command_is_answered_from_the_inbox(rig: Rig) -> None:
    spy = ReplySpy(rig.orchestrators[0])
    [saga_id] = await rig.start([trio_input()])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED
    alpha = rig.participants["alpha"]
    runs, answers = alpha.handler_runs, alpha.inbox_answers
    effects = _all_effects(await rig.effects())
    row = (await _sent_commands(rig, saga_id))["a", "action", 1]
    command = _command(row)
    reply_id = _reply_id(command)

    async with Hand.open(rig.amqp_url) as hand:
        # The command exactly as the orchestrator sent it (same message id and key), but
        # answered to us so we can read the answer.
        await hand.publish(
            row.body,
            exchange=COMMANDS_EXCHANGE,
            routing_key="alpha",
            message_id=row.message_id,
            headers=row.headers,
            type=row.type,
            correlation_id=row.correlation_id,
            reply_to=hand.reply_to,
        )
        reply = await hand.reply_for(command.idempotency_key)
        assert reply.outcome == "success"
        assert reply.result == {"by": "alpha", "step": "a", "kind": "action"}
        assert reply.message_id == reply_id, "a re-sent reply must be the same message"
        assert alpha.handler_runs == runs
        assert alpha.inbox_answers == answers + 1

        # Redelivered to the orchestrator's queue: its answer is the reply already handled,
        # which the orchestrator drops by its message id.
        seen = spy.count(reply_id)
        assert seen >= 1
        await hand.publish(
            row.body,
            exchange=COMMANDS_EXCHANGE,
            routing_key="alpha",
            message_id=row.message_id,
            headers=row.headers,
            type=row.type,
            correlation_id=row.correlation_id,
            reply_to=REPLY_QUEUE,
        )
        assert await spy.outcome(reply_id, occurrence=seen + 1) is None
        assert alpha.handler_runs == runs
        assert alpha.inbox_answers == answers + 2

    assert _all_effects(await rig.effects()) == effects
    end = await (await rig.reader()).get(saga_id)
    assert end is not None
    assert end.version == record.version


async def test_compensation_that_arrives_before_its_action_cancels_the_action(rig: Rig) -> None:
    saga_id = f"hand-{_new_id()}"
    compensation = _hand_command(saga_id, "a", "compensation", "undo", {"result": None})
    action = _hand_command(saga_id, "a", "action", "do", {"behaviour": {}})
    alpha = rig.participants["alpha"]
    runs, answers = alpha.handler_runs, alpha.inbox_answers

    async with Hand.open(rig.amqp_url) as hand:
        await hand.command(compensation, "alpha")
        undone = await hand.reply_for(compensation.idempotency_key)
        assert undone.outcome == "success"
        assert undone.kind == "compensation"
        assert undone.result == {"by": "alpha", "step": "a", "kind": "compensation"}

        await hand.command(action, "alpha")
        late = await hand.reply_for(action.idempotency_key)
        assert late.outcome == "failure"
        assert late.error is not None
        assert (late.error.code, late.error.retryable) == ("cancelled", False)
        assert alpha.handler_runs == runs + 1, "the late action must not run"
        assert alpha.inbox_answers == answers + 1, "answered from the compensation's mark"

        # Every later attempt of that action is cancelled too, from the inbox.
        retry = _hand_command(saga_id, "a", "action", "do", {"behaviour": {}}, attempt=2)
        await hand.command(retry, "alpha")
        again = await hand.reply_for(action.idempotency_key)
        assert again.error is not None
        assert again.error.code == "cancelled"
        assert again.attempt == 2
        assert alpha.handler_runs == runs + 1
        assert alpha.inbox_answers == answers + 2

    assert _effects(await rig.effects(), saga_id) == [("a", "compensation")]


# -- bad input -------------------------------------------------------------------------------


def _valid_message(queue: str) -> Message:
    """A valid message of the type ``queue`` reads."""
    saga_id = _new_id()
    if queue == START_QUEUE:
        return StartRequest(message_id=_new_id(), saga_name="trio", input=trio_input())
    command = _hand_command(saga_id, "a", "action", "do", {"behaviour": {}})
    if queue == REPLY_QUEUE:
        return StepReply.success(command, {}, message_id=_new_id())
    return command


def _other_message(queue: str) -> Message:
    """A valid message of a type ``queue`` does not read."""
    return _valid_message(REPLY_QUEUE if queue != REPLY_QUEUE else START_QUEUE)


def _poison(queue: str) -> list[tuple[str, bytes, str]]:
    """(label, body, what the dead-letter reason must say) for each kind of bad input."""
    valid = json.loads(encode(_valid_message(queue)).body)
    type_name = valid["type"]
    other = encode(_other_message(queue))
    padding = MAX_BODY_BYTES + 1 - len(b'{"pad":""}')
    missing = {key: value for key, value in valid.items() if key != "message_id"}
    return [
        ("not_json", b"{this is not json", "body is not valid JSON"),
        (
            "schema_version",
            json.dumps({**valid, "schema_version": 2}).encode(),
            f"unsupported schema version 2 for {type_name}",
        ),
        (
            "unknown_type",
            json.dumps({**valid, "type": "saga.bogus"}).encode(),
            "unknown message type 'saga.bogus'",
        ),
        (
            "too_large",
            b'{"pad":"' + b"x" * padding + b'"}',
            f"body is {MAX_BODY_BYTES + 1} bytes, over the {MAX_BODY_BYTES}-byte limit",
        ),
        ("other_type", other.body, f"expected {type_name}, got {other.type}"),
        ("invalid", json.dumps(missing).encode(), f"invalid {type_name}: message_id"),
    ]


@SQLITE_ONLY
async def test_poison_input_is_dead_lettered_with_its_reason_and_service_goes_on(
    rig: Rig,
) -> None:
    queues = [START_QUEUE, REPLY_QUEUE, participant_queue("alpha")]
    alpha = rig.participants["alpha"]
    runs = alpha.handler_runs
    async with Hand.open(rig.amqp_url) as hand:
        sent: dict[str, list[tuple[str, bytes, str]]] = {}
        for queue in queues:
            sent[queue] = _poison(queue)
            for index, (label, body, _) in enumerate(sent[queue]):
                # One without a message id: other senders may not set one.
                message_id = None if index == 0 else f"poison-{label}-{_new_id()}"
                await hand.publish(body, routing_key=queue, message_id=message_id)

        for queue in queues:
            dead = await hand.dead_letters(queue, len(sent[queue]))
            by_body = {message.body: message for message in dead}
            for label, body, reason in sent[queue]:
                message = by_body.get(body)
                assert message is not None, f"{label} sent to {queue} is not in its DLQ"
                headers = message.headers or {}
                assert reason in _text(headers.get(REASON)), (queue, label, headers.get(REASON))
                assert _text(headers.get("x-original-queue")) == queue

        # The consumers keep serving: a good saga goes through all three queues.
        [saga_id] = await rig.start([trio_input()])
        record = (await rig.wait_terminal([saga_id]))[saga_id]
        assert record.state.status is SagaStatus.COMPLETED
        # Nothing went back to its queue to be delivered again.
        for queue in queues:
            assert await hand.ready(queue) == 0, queue
            assert await hand.ready(dead_letter_queue(queue)) == 0, queue
    assert alpha.handler_runs == runs + 1


@SQLITE_ONLY
async def test_command_without_a_handler_is_dead_lettered_naming_it(rig: Rig) -> None:
    saga_id = f"hand-{_new_id()}"
    command = _hand_command(saga_id, "a", "action", "teleport", {"to": "mars"})
    alpha = rig.participants["alpha"]
    runs, answers = alpha.handler_runs, alpha.inbox_answers
    async with Hand.open(rig.amqp_url) as hand:
        await hand.command(command, "alpha")
        [dead] = await hand.dead_letters(participant_queue("alpha"), 1)
        assert dead.message_id == command.message_id
        assert dead.body == encode(command).body
        headers = dead.headers or {}
        assert _text(headers.get(REASON)) == "no handler for command 'teleport'"
        assert _text(headers.get("x-idempotency-key")) == command.idempotency_key

        # The queue keeps serving, and the dead-lettered command was never answered.
        [good] = await rig.start([trio_input()])
        record = (await rig.wait_terminal([good]))[good]
        assert record.state.status is SagaStatus.COMPLETED
        assert hand.replies_received() == 0, "a command without a handler is not answered"
        assert await hand.ready(participant_queue("alpha")) == 0
    assert (alpha.handler_runs, alpha.inbox_answers) == (runs + 1, answers)
    assert _effects(await rig.effects(), saga_id) == []


# -- stopping ------------------------------------------------------------------------------


async def test_stopping_a_participant_lets_its_running_handler_finish(rig: Rig) -> None:
    baseline = INVOCATIONS.get("alpha", 0)
    [saga_id] = await rig.start([trio_input(a={"delay_first": 1.5})])
    await _until(lambda: INVOCATIONS.get("alpha", 0) > baseline, "alpha's handler started")
    alpha = rig.participants["alpha"]
    assert alpha.handler_runs == 0, "the handler should still be running"

    await rig.stop_participant("alpha")
    assert alpha.handler_runs == 1

    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED
    assert _effects(await rig.effects(), saga_id).count(("a", "action")) == 1
    events = [(entry.type, entry.attempt) for entry in await _history(rig, saga_id)]
    assert (HistoryType.STEP_SUCCEEDED, 1) in events
    assert HistoryType.STEP_TIMED_OUT not in [event_type for event_type, _ in events]
    async with Hand.open(rig.amqp_url) as hand:
        assert await hand.ready(participant_queue("alpha")) == 0, "the command was not acked"
