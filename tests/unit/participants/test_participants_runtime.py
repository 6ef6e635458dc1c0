"""``ParticipantService`` per delivery: decode, run through the inbox, reply, then settle.

The transport is a fake that records what would go on the wire; the database is an
in-memory SQLite, set up as the product sets up every SQLite database.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contracts import StepCommand, StepReply, decode, encode
from orchestrator.stores.engine import create_engine
from orchestrator.topology import REPLY_QUEUE, participant_topology
from orchestrator.transport import Handler, PublishFailed, Subscription, TransportUnavailable
from participants import Participant, PermanentError, RetryableError, StepContext
from participants import inbox as inbox_module
from participants.runtime import ParticipantService, ParticipantSettings

# -- a participant whose handler does what each test says ------------------------------------

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(400), nullable=False),
)


class Order(BaseModel):
    """The payload of ``place``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    qty: int = Field(ge=1)


class Placed(BaseModel):
    """A result model."""

    order_id: str
    on: date


Outcome = Callable[[Order, StepContext], Awaitable[Any]]


async def _placed(payload: Order, ctx: StepContext) -> Any:
    return Placed(order_id=payload.order_id, on=date(2024, 1, 2))


@dataclass
class Shop:
    """One participant service on a fake transport, and what it did."""

    service: ParticipantService
    transport: FakeTransport
    events: list[str]
    calls: list[tuple[Any, StepContext]]
    outcome: Outcome = _placed

    async def deliver(
        self,
        command: StepCommand | bytes,
        *,
        reply_to: str | None = "replies",
        redelivered: bool = False,
    ) -> FakeDelivery:
        """Hand one delivery to the service, as the consumer would."""
        if isinstance(command, StepCommand):
            wire = encode(command)
            delivery = FakeDelivery(
                wire.body,
                wire.headers,
                wire.message_id,
                reply_to,
                self.events,
                redelivered=redelivered,
            )
        else:
            delivery = FakeDelivery(command, {}, None, reply_to, self.events)
        await self.service.handle(delivery)
        return delivery

    def replies(self) -> list[StepReply]:
        return [decode(sent["body"], sent["headers"], expect=StepReply) for sent in self.sent()]

    def sent(self) -> list[dict[str, Any]]:
        return self.transport.published

    async def orders(self) -> list[str]:
        async with self.service.engine.connect() as conn:
            rows = await conn.execute(sa.select(orders.c.key).order_by(orders.c.id))
            return list(rows.scalars())

    async def stored(self) -> dict[str, tuple[str, Any, str | None, str | None]]:
        table = inbox_module.inbox
        async with self.service.engine.connect() as conn:
            rows = await conn.execute(sa.select(table))
            return {
                row.idempotency_key: (
                    str(row.status),
                    row.result,
                    row.error_code,
                    row.error_message,
                )
                for row in rows
            }


def _app(shop: list[Shop]) -> Participant:
    app = Participant("shop", metadata=metadata)

    @app.command("place")
    async def place(payload: Order, ctx: StepContext) -> Any:
        this = shop[0]
        this.calls.append((payload, ctx))
        await ctx.session.execute(orders.insert().values(key=ctx.idempotency_key))
        return await this.outcome(payload, ctx)

    @app.command("unplace")
    async def unplace(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        shop[0].calls.append((payload, ctx))
        await ctx.session.execute(orders.insert().values(key=ctx.idempotency_key))
        return {"undone": ctx.action_key}

    return app


@dataclass
class FakeDelivery:
    """A delivery that records how it was settled."""

    body: bytes
    headers: Mapping[str, object]
    message_id: str | None
    reply_to: str | None
    events: list[str]
    user_id: str | None = None
    redelivered: bool = False
    queue: str = "saga.participant.shop"
    reason: str | None = None

    async def ack(self) -> None:
        self.events.append("ack")

    async def requeue(self) -> None:
        self.events.append("requeue")

    async def dead_letter(self, reason: str) -> None:
        self.reason = reason
        self.events.append("dead_letter")


class FakeSubscription:
    """A consumer that records its cancellation (with its prefetch)."""

    def __init__(self, transport: FakeTransport, prefetch: int) -> None:
        self._transport = transport
        self.prefetch = prefetch

    async def cancel(self) -> None:
        self._transport.events.append(f"cancel {self.prefetch}")
        if self._transport.subscriptions[-1] is self:
            self._transport.cancelled.set()


@dataclass
class FakeTransport:
    """Records declarations and publishes; ``failures`` publishes fail before one succeeds."""

    events: list[str]
    published: list[dict[str, Any]] = field(default_factory=list)
    declared: list[Any] = field(default_factory=list)
    consuming: list[tuple[str, int]] = field(default_factory=list)
    failures: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the subscription in use (the last one started) is cancelled."""
    subscriptions: list[FakeSubscription] = field(default_factory=list)
    consume_failures: int = 0

    async def declare(self, topology: Any) -> None:
        self.declared.append(topology)

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: Mapping[str, object] | None = None,
        content_type: str = "application/json",
        correlation_id: str | None = None,
        reply_to: str | None = None,
        type: str | None = None,
        mandatory: bool = True,
    ) -> None:
        if self.failures:
            self.failures -= 1
            self.events.append("publish_failed")
            raise PublishFailed("not confirmed")
        self.events.append("publish")
        self.published.append(
            {
                "exchange": exchange,
                "routing_key": routing_key,
                "body": body,
                "message_id": message_id,
                "headers": dict(headers or {}),
                "content_type": content_type,
                "correlation_id": correlation_id,
                "type": type,
                "mandatory": mandatory,
            }
        )

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> Subscription:
        if self.consume_failures:
            self.consume_failures -= 1
            raise TransportUnavailable("channel closed")
        self.consuming.append((queue, prefetch))
        self.subscriptions.append(FakeSubscription(self, prefetch))
        return self.subscriptions[-1]

    async def close(self) -> None:
        self.events.append("close")


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    engine = create_engine("sqlite+aiosqlite://")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def shop(engine: AsyncEngine) -> Shop:
    events: list[str] = []
    holder: list[Shop] = []
    transport = FakeTransport(events)
    settings = ParticipantSettings(amqp_url="amqp://unused/", database_url="sqlite://")
    service = ParticipantService(_app(holder), settings, engine, transport)
    made = Shop(service, transport, events, [])
    holder.append(made)
    await service.start()
    return made


def _command(
    payload: dict[str, Any] | None = None,
    *,
    saga_id: str = "saga-1",
    attempt: int = 1,
    command: str = "place",
    message_id: str | None = None,
) -> StepCommand:
    return StepCommand(
        message_id=message_id or str(uuid.uuid4()),
        saga_id=saga_id,
        saga_name="checkout",
        saga_version=3,
        step="place_order",
        kind="action",
        command=command,
        attempt=attempt,
        idempotency_key=f"{saga_id}:place_order:action",
        payload={"order_id": "o-1", "qty": 2} if payload is None else payload,
    )


def _compensation(saga_id: str = "saga-1") -> StepCommand:
    return StepCommand(
        message_id=str(uuid.uuid4()),
        saga_id=saga_id,
        saga_name="checkout",
        saga_version=3,
        step="place_order",
        kind="compensation",
        command="unplace",
        attempt=1,
        idempotency_key=f"{saga_id}:place_order:compensation",
        action_key=f"{saga_id}:place_order:action",
        payload={},
    )


def _failure(reply: StepReply) -> tuple[str, str, bool]:
    assert reply.outcome == "failure", reply
    assert reply.error is not None
    return reply.error.code, reply.error.message, reply.error.retryable


# -- start and stop ---------------------------------------------------------------------------


async def test_start_creates_the_tables_declares_the_queues_and_consumes(shop: Shop) -> None:
    assert shop.transport.declared == [participant_topology("shop")]
    assert shop.transport.consuming == [("saga.participant.shop", 1)]
    assert await shop.orders() == []
    assert await shop.stored() == {}


async def test_redelivered_commands_are_taken_one_at_a_time(shop: Shop) -> None:
    """A redelivered command may have killed the last process: while they come, at most
    one command is held, so a death on one raises no bystander's delivery count."""
    for saga_id in ("saga-1", "saga-2"):
        delivered = await shop.deliver(_command(saga_id=saga_id), redelivered=True)
        assert delivered.events[-1] == "ack"
    assert shop.transport.consuming == [("saga.participant.shop", 1)]
    assert not any(event.startswith("cancel") for event in shop.events)


async def test_the_first_fresh_command_widens_the_consumer_to_the_full_prefetch(
    shop: Shop,
) -> None:
    await shop.deliver(_command(saga_id="saga-1"), redelivered=True)
    fresh = await shop.deliver(_command(saga_id="saga-2"))
    await shop.deliver(_command(saga_id="saga-3"))
    assert shop.transport.consuming == [("saga.participant.shop", 1), ("saga.participant.shop", 20)]
    # The full consumer starts before the one-at-a-time one stops: never none.
    assert shop.events.count("cancel 1") == 1
    assert fresh.events[-1] == "ack"


async def test_a_consumer_that_cannot_widen_stays_one_at_a_time_and_tries_again(
    shop: Shop,
) -> None:
    shop.transport.consume_failures = 1
    first = await shop.deliver(_command(saga_id="saga-1"))
    assert first.events[-1] == "ack"
    assert shop.transport.consuming == [("saga.participant.shop", 1)]
    assert "cancel 1" not in shop.events
    await shop.deliver(_command(saga_id="saga-2"))
    assert shop.transport.consuming == [("saga.participant.shop", 1), ("saga.participant.shop", 20)]


async def test_stop_lets_the_handler_in_flight_finish_then_closes(shop: Shop) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def wait_for_release(payload: Order, ctx: StepContext) -> Any:
        started.set()
        await release.wait()
        return {"done": True}

    shop.outcome = wait_for_release
    delivery = asyncio.create_task(shop.deliver(_command()))
    await started.wait()
    stopping = asyncio.create_task(shop.service.stop())
    await shop.transport.cancelled.wait()  # stop() cancels the subscription first
    assert not stopping.done(), "stop() must wait for the handler"
    release.set()
    await delivery
    await stopping
    assert shop.events == ["cancel 1", "cancel 20", "publish", "ack", "close"]


async def test_stop_gives_up_waiting_after_the_grace_period(engine: AsyncEngine) -> None:
    events: list[str] = []
    holder: list[Shop] = []
    transport = FakeTransport(events)
    settings = ParticipantSettings(
        amqp_url="amqp://unused/", database_url="sqlite://", grace_seconds=0.05
    )
    service = ParticipantService(_app(holder), settings, engine, transport)
    never = asyncio.Event()
    started = asyncio.Event()

    async def stuck(payload: Order, ctx: StepContext) -> Any:
        started.set()
        await never.wait()

    holder.append(Shop(service, transport, events, [], stuck))
    await service.start()
    delivery = asyncio.create_task(holder[0].deliver(_command()))
    await started.wait()
    await asyncio.wait_for(service.stop(), 5)
    assert "close" in events
    assert "ack" not in events, "a handler cut off by the grace period is not acked"
    # What happens to it next is the process exit's business (the broker redelivers).
    delivery.cancel()
    await asyncio.gather(delivery, return_exceptions=True)


# -- success ----------------------------------------------------------------------------------


async def test_a_success_is_replied_then_acked(shop: Shop) -> None:
    command = _command(message_id="cmd-1")
    delivery = await shop.deliver(command, reply_to="my-replies")
    assert shop.events[-2:] == ["publish", "ack"]
    [sent] = shop.sent()
    assert (sent["exchange"], sent["routing_key"], sent["mandatory"]) == ("", "my-replies", True)
    assert sent["message_id"] == "reply-cmd-1"
    assert sent["correlation_id"] == "saga-1"
    assert sent["type"] == "saga.reply"
    [reply] = shop.replies()
    assert reply == StepReply.success(
        command, {"order_id": "o-1", "on": "2024-01-02"}, message_id="reply-cmd-1"
    )
    assert delivery.reason is None
    assert await shop.orders() == [command.idempotency_key]
    assert shop.service.handler_runs == 1
    assert shop.service.inbox_answers == 0


async def test_a_reply_goes_to_the_orchestrator_when_the_command_names_no_reply_queue(
    shop: Shop,
) -> None:
    await shop.deliver(_command(), reply_to=None)
    [sent] = shop.sent()
    assert sent["routing_key"] == REPLY_QUEUE


async def test_the_handler_gets_the_payload_model_and_the_whole_context(shop: Shop) -> None:
    command = _command({"order_id": "o-9", "qty": 3}, attempt=4)
    await shop.deliver(command)
    [(payload, ctx)] = shop.calls
    assert payload == Order(order_id="o-9", qty=3)
    assert (ctx.saga_id, ctx.saga_name, ctx.step, ctx.kind, ctx.attempt) == (
        "saga-1",
        "checkout",
        "place_order",
        "action",
        4,
    )
    assert ctx.idempotency_key == "saga-1:place_order:action"
    assert ctx.action_key is None
    assert isinstance(ctx.session, AsyncSession)
    assert isinstance(ctx.log, logging.LoggerAdapter)


async def _as_dict(payload: Order, ctx: StepContext) -> Any:
    return {"order_id": payload.order_id, "nested": {"list": [1, 2.5, None, True]}}


async def _as_none(payload: Order, ctx: StepContext) -> Any:
    return None


@pytest.mark.parametrize(
    ("outcome", "result"),
    [
        (_placed, {"order_id": "o-1", "on": "2024-01-02"}),
        (_as_dict, {"order_id": "o-1", "nested": {"list": [1, 2.5, None, True]}}),
        (_as_none, {}),
    ],
)
async def test_a_handler_may_return_a_model_a_dict_or_none(
    shop: Shop, outcome: Outcome, result: dict[str, Any]
) -> None:
    shop.outcome = outcome
    await shop.deliver(_command())
    [reply] = shop.replies()
    assert reply.outcome == "success"
    assert reply.result == result
    stored = await shop.stored()
    assert stored["saga-1:place_order:action"][:2] == ("succeeded", result)


async def test_a_redelivered_success_is_answered_from_the_inbox(shop: Shop) -> None:
    command = _command()
    await shop.deliver(command)
    redelivered = await shop.deliver(command)
    retried = await shop.deliver(_command(attempt=2))
    first, again, later = shop.replies()
    assert again == first, "the same command message gets the very same reply message"
    assert later.attempt == 2
    assert later.result == first.result
    assert later.message_id != first.message_id
    assert len(shop.calls) == 1
    assert (shop.service.handler_runs, shop.service.inbox_answers) == (1, 2)
    assert redelivered.events[-1] == retried.events[-1] == "ack"
    assert await shop.orders() == [command.idempotency_key]


async def test_a_long_command_id_still_gives_a_valid_stable_reply_id(shop: Shop) -> None:
    command = _command(message_id="m" * 200)
    await shop.deliver(command)
    await shop.deliver(command)
    first, again = shop.replies()
    assert first.message_id == again.message_id
    assert first.message_id.startswith("reply-")
    assert len(first.message_id) <= 200


# -- failures ---------------------------------------------------------------------------------


async def test_a_bad_payload_is_a_permanent_failure_naming_the_field(shop: Shop) -> None:
    await shop.deliver(_command({"order_id": "o-1", "qty": 0}))
    await shop.deliver(_command({"qty": 2}, saga_id="saga-2"))
    too_few, missing = shop.replies()
    code, message, retryable = _failure(too_few)
    assert (code, retryable) == ("invalid_payload", False)
    assert message.startswith("payload for 'place' is invalid: qty:")
    assert _failure(missing)[1] == "payload for 'place' is invalid: order_id: Field required"
    assert shop.calls == [], "the handler never sees a bad payload"
    assert await shop.orders() == []

    # Stored: the next attempt gets the same answer without validating again.
    await shop.deliver(_command({"order_id": "o-1", "qty": 5}, attempt=2))
    assert _failure(shop.replies()[-1]) == (code, message, False)
    assert shop.calls == []


async def _permanent(payload: Order, ctx: StepContext) -> Any:
    raise PermanentError("out_of_stock", "no stock for o-1")


async def test_a_permanent_error_is_stored_and_answered_again(shop: Shop) -> None:
    shop.outcome = _permanent
    await shop.deliver(_command())
    await shop.deliver(_command(attempt=2))
    first, again = shop.replies()
    assert _failure(first) == ("out_of_stock", "no stock for o-1", False)
    assert _failure(again) == ("out_of_stock", "no stock for o-1", False)
    assert again.attempt == 2
    assert len(shop.calls) == 1
    assert (shop.service.handler_runs, shop.service.inbox_answers) == (1, 1)
    assert await shop.stored() == {
        "saga-1:place_order:action": ("failed", None, "out_of_stock", "no stock for o-1")
    }
    assert await shop.orders() == [], "the handler's writes roll back with a failure"


async def _retryable(payload: Order, ctx: StepContext) -> Any:
    if ctx.attempt == 1:
        raise RetryableError("busy", "try later")
    return {"attempt": ctx.attempt}


async def _crashes(payload: Order, ctx: StepContext) -> Any:
    if ctx.attempt == 1:
        raise ValueError("kaput")
    return {"attempt": ctx.attempt}


@pytest.mark.parametrize(
    ("outcome", "code", "message"),
    [(_retryable, "busy", "try later"), (_crashes, "handler_error", "ValueError: kaput")],
)
async def test_a_retryable_failure_stores_nothing_and_the_next_attempt_runs_again(
    shop: Shop, outcome: Outcome, code: str, message: str
) -> None:
    shop.outcome = outcome
    delivery = await shop.deliver(_command())
    assert _failure(shop.replies()[0]) == (code, message, True)
    assert delivery.events[-1] == "ack", "a retryable failure is an answer too"
    assert await shop.stored() == {}
    assert await shop.orders() == [], "the failed attempt's writes roll back"

    await shop.deliver(_command(attempt=2))
    second = shop.replies()[1]
    assert second.outcome == "success"
    assert second.result == {"attempt": 2}
    assert len(shop.calls) == 2
    assert await shop.orders() == ["saga-1:place_order:action"]
    assert (await shop.stored())["saga-1:place_order:action"][0] == "succeeded"


async def test_writes_made_before_a_failure_are_rolled_back(shop: Shop) -> None:
    async def write_more_then_fail(payload: Order, ctx: StepContext) -> Any:
        await ctx.session.execute(orders.insert().values(key="extra"))
        await ctx.session.flush()
        raise PermanentError("refused", "no")

    shop.outcome = write_more_then_fail
    await shop.deliver(_command())
    assert await shop.orders() == []
    assert (await shop.stored())["saga-1:place_order:action"][0] == "failed"


class _Opaque:
    """Not JSON."""


@pytest.mark.parametrize(
    "value",
    [
        {"when": datetime(2024, 1, 2, 3, 4, 5)},
        {"nan": float("nan")},
        {"thing": _Opaque()},
        {"set": {1, 2}},
        {1: "not a string key"},
    ],
    ids=["datetime", "nan", "object", "set", "int_key"],
)
async def test_a_result_that_is_not_json_is_a_permanent_invalid_result(
    shop: Shop, value: Any
) -> None:
    async def returns(payload: Order, ctx: StepContext) -> Any:
        return value

    shop.outcome = returns
    await shop.deliver(_command())
    code, message, retryable = _failure(shop.replies()[0])
    assert (code, retryable) == ("invalid_result", False)
    assert message.startswith("the handler for 'place' returned ")
    assert await shop.orders() == []
    assert (await shop.stored())["saga-1:place_order:action"][0] == "failed"


@pytest.mark.parametrize("value", [["r-1"], "r-1", 42], ids=["list", "str", "int"])
async def test_a_result_that_is_not_an_object_is_an_invalid_result_saying_what_it_was(
    shop: Shop, value: Any
) -> None:
    async def returns(payload: Order, ctx: StepContext) -> Any:
        return value

    shop.outcome = returns
    await shop.deliver(_command())
    code, message, retryable = _failure(shop.replies()[0])
    assert (code, retryable) == ("invalid_result", False)
    assert type(value).__name__ in message
    # The sentence must not claim the handler returned what it should have returned.
    assert "returned a dict" not in message, message


async def test_a_reply_not_confirmed_is_sent_again_before_the_ack(shop: Shop) -> None:
    shop.transport.failures = 1
    delivery = await shop.deliver(_command())
    assert delivery.events[-3:] == ["publish_failed", "publish", "ack"]
    assert len(shop.replies()) == 1
    assert len(shop.calls) == 1


# -- not run at all ---------------------------------------------------------------------------


async def test_a_command_without_a_handler_is_dead_lettered_and_not_answered(shop: Shop) -> None:
    delivery = await shop.deliver(_command(command="teleport"))
    assert delivery.reason == "no handler for command 'teleport'"
    assert delivery.events[-1] == "dead_letter"
    assert shop.sent() == []
    assert await shop.stored() == {}, "nothing stored: deploy the handler, then replay"
    assert shop.service.handler_runs == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "body is not valid UTF-8"),
        (b"[1, 2", "body is not valid JSON"),
        (b'{"type": "saga.nope", "schema_version": 1}', "unknown message type 'saga.nope'"),
        (b"{" + b'"a":1,' * 50_000 + b'"b":2}', "over the 262144-byte limit"),
    ],
    ids=["utf8", "json", "type", "size"],
)
async def test_an_undecodable_delivery_is_dead_lettered_with_the_reason(
    shop: Shop, body: bytes, reason: str
) -> None:
    delivery = await shop.deliver(body)
    assert delivery.reason is not None
    assert reason in delivery.reason
    assert delivery.events[-1] == "dead_letter"
    assert shop.sent() == []


async def test_a_reply_is_refused_on_a_participant_queue(shop: Shop) -> None:
    reply = StepReply.success(_command(), {}, message_id="r-1")
    delivery = await shop.deliver(encode(reply).body)
    assert delivery.reason == "expected saga.command, got saga.reply"


# -- compensations ----------------------------------------------------------------------------


async def test_a_compensation_that_comes_first_cancels_its_action(shop: Shop) -> None:
    await shop.deliver(_compensation())
    await shop.deliver(_command())
    undone, action = shop.replies()
    assert undone.outcome == "success"
    assert undone.result == {"undone": "saga-1:place_order:action"}
    code, _, retryable = _failure(action)
    assert (code, retryable) == ("cancelled", False)
    assert [ctx.kind for _, ctx in shop.calls] == ["compensation"]
    assert shop.calls[0][1].action_key == "saga-1:place_order:action"
    assert await shop.orders() == ["saga-1:place_order:compensation"]


async def test_a_compensation_after_its_action_runs_normally(shop: Shop) -> None:
    await shop.deliver(_command())
    await shop.deliver(_compensation())
    action, undone = shop.replies()
    assert action.outcome == undone.outcome == "success"
    assert await shop.orders() == [
        "saga-1:place_order:action",
        "saga-1:place_order:compensation",
    ]


async def test_a_compensation_after_a_permanent_failure_runs_and_keeps_the_failure(
    shop: Shop,
) -> None:
    shop.outcome = _permanent
    await shop.deliver(_command())
    await shop.deliver(_compensation())
    await shop.deliver(_command(attempt=2))
    _, undone, again = shop.replies()
    assert undone.outcome == "success"
    assert _failure(again)[0] == "out_of_stock", "the action's own outcome stays"


# -- settings ---------------------------------------------------------------------------------


def test_settings_from_the_environment_and_their_defaults() -> None:
    defaults = ParticipantSettings.from_env("inventory", {})
    assert defaults.amqp_url == "amqp://guest:guest@localhost:5672/"
    assert defaults.database_url == "sqlite+aiosqlite:///./inventory.db"
    assert (defaults.prefetch, defaults.grace_seconds) == (20, 30.0)
    given = ParticipantSettings.from_env(
        "inventory",
        {
            "SAGA_AMQP_URL": "amqp://u:p@broker:5672/v",
            "SAGA_PARTICIPANT_DATABASE_URL": "postgresql+asyncpg://db/inventory",
        },
    )
    assert given.amqp_url == "amqp://u:p@broker:5672/v"
    assert given.database_url == "postgresql+asyncpg://db/inventory"


async def test_a_result_too_large_to_send_is_a_permanent_invalid_result(shop: Shop) -> None:
    async def huge(payload: Order, ctx: StepContext) -> Any:
        return {"blob": "x" * 300_000}

    shop.outcome = huge
    delivery = await shop.deliver(_command())
    code, message, retryable = _failure(shop.replies()[0])
    assert (code, retryable) == ("invalid_result", False)
    assert "over the 262144-byte limit" in message
    assert delivery.events[-1] == "ack"


async def test_an_error_message_that_is_not_valid_text_still_gets_a_reply(shop: Shop) -> None:
    # os.fsdecode() turns undecodable bytes of a file name into lone surrogates, so an
    # exception about a file can carry one; it must not make the command unanswerable.
    async def bad_file(payload: Order, ctx: StepContext) -> Any:
        raise PermanentError("io", "cannot open /data/\udcff.csv")

    shop.outcome = bad_file
    delivery = await shop.deliver(_command())
    assert delivery.events[-1] == "ack", delivery.events
    code, message, retryable = _failure(shop.replies()[0])
    assert (code, retryable) == ("io", False)
    assert message.startswith("cannot open /data/")


async def test_an_exception_whose_text_is_not_valid_text_still_gets_a_reply(shop: Shop) -> None:
    async def bad_file(payload: Order, ctx: StepContext) -> Any:
        raise FileNotFoundError("no such file: /data/\udcff.csv")

    shop.outcome = bad_file
    delivery = await shop.deliver(_command())
    assert delivery.events[-1] == "ack", delivery.events
    code, message, retryable = _failure(shop.replies()[0])
    assert (code, retryable) == ("handler_error", True)
    assert message.startswith("FileNotFoundError: no such file: /data/")


async def test_old_inbox_rows_are_pruned_and_recent_ones_kept(shop: Shop) -> None:
    old, recent = _command(saga_id="saga-old"), _command(saga_id="saga-new")
    await shop.deliver(old)
    await shop.deliver(recent)
    table = inbox_module.inbox
    async with shop.service.engine.begin() as conn:
        await conn.execute(
            sa.update(table)
            .where(table.c.idempotency_key == old.idempotency_key)
            .values(updated_at=datetime.now(UTC) - timedelta(days=8))
        )

    assert await shop.service.pruner.prune_once() == 1

    assert set(await shop.stored()) == {recent.idempotency_key}
    await shop.deliver(recent)  # still answered from the inbox
    assert shop.service.inbox_answers == 1
