"""The participant SDK end to end: a service of our own on the real broker and each database.

Commands are made by hand and answered to the test's own queue, so what is checked is
exactly what a participant puts on the wire, what its inbox keeps and what its handler's
session commits (PRODUCT.md "Participant SDK").
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any, Literal, cast

import aio_pika
import sqlalchemy as sa
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.common import FieldValue
from pydantic import BaseModel, ConfigDict, Field

from contracts import StepCommand, StepReply, decode, encode
from orchestrator.stores.engine import create_engine
from orchestrator.topology import COMMANDS_EXCHANGE
from orchestrator.transports.amqp import AmqpTransport
from participants import Participant, PermanentError, RetryableError, StepContext
from participants import inbox as inbox_module
from participants.runtime import ParticipantService, ParticipantSettings

# -- the participant under test -------------------------------------------------------------

metadata = sa.MetaData()
writes = sa.Table(
    "sdk_writes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(400), nullable=False),
    sa.Column("note", sa.String(50), nullable=False),
)

Behaviour = Literal[
    "model", "dict", "none", "permanent", "retry_once", "crash_once", "not_json", "slow"
]


class Reserve(BaseModel):
    """The payload of ``reserve``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str
    qty: int = Field(ge=1)
    behaviour: Behaviour = "model"


class Reserved(BaseModel):
    """A result as a pydantic model (dates become ISO strings on the wire)."""

    reservation_id: str
    qty: int
    on: date


RUNS: Counter[str] = Counter()
"""Handler runs per idempotency key in this process (rolled-back runs included)."""

sdk = Participant("sdk", metadata=metadata)


@sdk.command("reserve")
async def reserve(payload: Reserve, ctx: StepContext) -> Reserved | dict[str, Any] | None:
    """Writes a row through the SDK's session, then does what ``behaviour`` says."""
    RUNS[ctx.idempotency_key] += 1
    await ctx.session.execute(writes.insert().values(key=ctx.idempotency_key, note="action"))
    if payload.behaviour == "slow":
        await asyncio.sleep(1.0)
    if payload.behaviour == "permanent":
        raise PermanentError("out_of_stock", f"no stock for {payload.sku}")
    if payload.behaviour == "retry_once" and ctx.attempt == 1:
        raise RetryableError("busy", "try again later")
    if payload.behaviour == "crash_once" and ctx.attempt == 1:
        raise ValueError("kaput")
    if payload.behaviour == "not_json":
        return {"when": datetime(2024, 1, 2, 3, 4, 5)}
    if payload.behaviour == "none":
        return None
    if payload.behaviour == "dict":
        return {"reservation_id": f"r-{ctx.saga_id}", "sku": payload.sku}
    return Reserved(reservation_id=f"r-{ctx.saga_id}", qty=payload.qty, on=date(2024, 1, 2))


@sdk.command("release")
async def release(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """A compensation: records that it ran, after whatever its action wrote."""
    RUNS[ctx.idempotency_key] += 1
    await ctx.session.execute(writes.insert().values(key=ctx.idempotency_key, note="undo"))
    return {"released": ctx.action_key}


# -- helpers ----------------------------------------------------------------------------------


def _command(
    behaviour: str | None,
    *,
    saga_id: str | None = None,
    attempt: int = 1,
    payload: dict[str, Any] | None = None,
) -> StepCommand:
    saga_id = saga_id or f"sdk-{uuid.uuid4()}"
    if payload is None:
        payload = {"sku": "sku-1", "qty": 2, "behaviour": behaviour}
    return StepCommand(
        message_id=str(uuid.uuid4()),
        saga_id=saga_id,
        saga_name="sdk_saga",
        saga_version=1,
        step="reserve",
        kind="action",
        command="reserve",
        attempt=attempt,
        idempotency_key=f"{saga_id}:reserve:action",
        payload=payload,
    )


def _again(command: StepCommand) -> StepCommand:
    """The next attempt of ``command``: a new message under the same key."""
    return command.model_copy(
        update={"message_id": str(uuid.uuid4()), "attempt": command.attempt + 1}
    )


def _compensation(action: StepCommand) -> StepCommand:
    return StepCommand(
        message_id=str(uuid.uuid4()),
        saga_id=action.saga_id,
        saga_name=action.saga_name,
        saga_version=1,
        step=action.step,
        kind="compensation",
        command="release",
        attempt=1,
        idempotency_key=f"{action.saga_id}:{action.step}:compensation",
        action_key=action.idempotency_key,
        payload={},
    )


class Commands:
    """Sends hand-made commands to ``sdk`` (with confirms) and collects the replies."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.reply_to = ""
        self.replies: list[StepReply] = []
        self._changed = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[Commands]:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            commands = cls(channel)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.consume(commands._on_reply, no_ack=True)
            commands.reply_to = queue.name
            yield commands
        finally:
            await connection.close()

    async def _on_reply(self, incoming: AbstractIncomingMessage) -> None:
        self.replies.append(decode(incoming.body, incoming.headers, expect=StepReply))
        self._changed.set()

    async def send(self, command: StepCommand) -> None:
        wire = encode(command)
        exchange = await self.channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        message = aio_pika.Message(
            wire.body,
            headers={key: cast(FieldValue, value) for key, value in wire.headers.items()},
            content_type=wire.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=wire.message_id,
            type=wire.type,
            correlation_id=wire.correlation_id,
            reply_to=self.reply_to,
        )
        await exchange.publish(message, routing_key="sdk", mandatory=True)

    async def wait(self, condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
        try:
            async with asyncio.timeout(within):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{what}: not within {within}s") from None

    async def answer(self, command: StepCommand) -> StepReply:
        """The reply to this very command message (replies carry ``reply-<command id>``)."""

        def answered() -> list[StepReply]:
            return [
                reply
                for reply in self.replies
                if reply.idempotency_key == command.idempotency_key
                and reply.attempt == command.attempt
                and reply.kind == command.kind
            ]

        await self.wait(lambda: bool(answered()), f"a reply to {command.message_id}")
        [reply] = answered()
        return reply


@asynccontextmanager
async def running(
    amqp_url: str, database_url: str, workers: int = 1
) -> AsyncIterator[list[ParticipantService]]:
    """``workers`` services of the ``sdk`` participant on one database."""
    services: list[ParticipantService] = []
    try:
        for index in range(workers):
            settings = ParticipantSettings(amqp_url=amqp_url, database_url=database_url)
            transport = AmqpTransport(amqp_url, name=f"test-sdk-{index}")
            await transport.connect()
            service = ParticipantService(sdk, settings, create_engine(database_url), transport)
            services.append(service)
            await service.start()
        yield services
    finally:
        for service in services:
            await service.stop()


async def _rows(database_url: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(the handlers' committed writes in order, the inbox's status per key)."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            written = await conn.execute(
                sa.select(writes.c.key, writes.c.note).order_by(writes.c.id)
            )
            table = inbox_module.inbox
            stored = await conn.execute(sa.select(table.c.idempotency_key, table.c.status))
            return (
                [(row.key, row.note) for row in written],
                {row.idempotency_key: str(row.status) for row in stored},
            )
    finally:
        await engine.dispose()


def _failure(reply: StepReply) -> tuple[str, bool]:
    assert reply.outcome == "failure", reply
    assert reply.error is not None
    return reply.error.code, reply.error.retryable


# -- tests ------------------------------------------------------------------------------------


async def test_handler_outcomes_are_replied_and_kept_exactly_as_promised(
    amqp_url: str, participant_database_url: str
) -> None:
    first = {
        name: _command(name)
        for name in ("model", "dict", "none", "permanent", "retry_once", "crash_once", "not_json")
    }
    first["invalid"] = _command(None, payload={"qty": 0})
    async with (
        running(amqp_url, participant_database_url) as [service],
        Commands.open(amqp_url) as commands,
    ):
        for command in first.values():
            await commands.send(command)
        got = {name: await commands.answer(command) for name, command in first.items()}

        # Successes: the handler's value, validated and dumped as JSON.
        model = got["model"]
        assert model.outcome == "success"
        saga = first["model"].saga_id
        assert model.result == {"reservation_id": f"r-{saga}", "qty": 2, "on": "2024-01-02"}
        assert got["dict"].result == {
            "reservation_id": f"r-{first['dict'].saga_id}",
            "sku": "sku-1",
        }
        assert got["none"].result == {}
        # Failures: permanent ones are stored, retryable ones are not.
        assert _failure(got["permanent"]) == ("out_of_stock", False)
        assert got["permanent"].error is not None
        assert got["permanent"].error.message == "no stock for sku-1"
        assert _failure(got["retry_once"]) == ("busy", True)
        assert _failure(got["crash_once"]) == ("handler_error", True)
        assert got["crash_once"].error is not None
        assert "ValueError: kaput" in got["crash_once"].error.message
        assert _failure(got["not_json"]) == ("invalid_result", False)
        assert _failure(got["invalid"]) == ("invalid_payload", False)
        assert got["invalid"].error is not None
        assert "sku" in got["invalid"].error.message
        assert "qty" in got["invalid"].error.message
        for reply in got.values():
            assert reply.message_id.startswith("reply-")

        written, stored = await _rows(participant_database_url)
        keys = {name: command.idempotency_key for name, command in first.items()}
        # The handler's writes committed with the success, and only with it.
        assert sorted(written) == sorted(
            (keys[name], "action") for name in ("model", "dict", "none")
        )
        assert stored == {
            keys["model"]: "succeeded",
            keys["dict"]: "succeeded",
            keys["none"]: "succeeded",
            keys["permanent"]: "failed",
            keys["not_json"]: "failed",
            keys["invalid"]: "failed",
        }
        assert RUNS[keys["invalid"]] == 0, "a bad payload never reaches the handler"
        assert service.inbox_answers == 0
        runs = service.handler_runs

        # The next attempt of each: stored outcomes are answered again without running the
        # handler; retryable failures left nothing behind, so those run again.
        second = {name: _again(command) for name, command in first.items()}
        for command in second.values():
            await commands.send(command)
        again = {name: await commands.answer(command) for name, command in second.items()}
        for name in ("model", "dict", "none", "permanent", "not_json", "invalid"):
            assert again[name].outcome == got[name].outcome, name
            assert again[name].result == got[name].result, name
            assert again[name].error == got[name].error, name
            assert again[name].attempt == 2
        assert again["retry_once"].outcome == "success"
        assert again["crash_once"].outcome == "success"
        assert service.inbox_answers == 6
        assert service.handler_runs == runs + 2, "only the retryable failures run again"
        for name in ("model", "dict", "none", "permanent", "not_json"):
            assert RUNS[keys[name]] == 1, name
        for name in ("retry_once", "crash_once"):
            assert RUNS[keys[name]] == 2, name

    written, stored = await _rows(participant_database_url)
    assert sorted(written) == sorted(
        (keys[name], "action") for name in ("model", "dict", "none", "retry_once", "crash_once")
    )
    assert stored[keys["retry_once"]] == stored[keys["crash_once"]] == "succeeded"


async def test_a_key_never_runs_twice_at_once_and_a_compensation_waits_for_its_action(
    amqp_url: str, participant_database_url: str
) -> None:
    async with (
        running(amqp_url, participant_database_url, workers=2) as services,
        Commands.open(amqp_url) as commands,
    ):
        # Two deliveries of one step while its handler runs (a redelivery after a timeout,
        # taken by the other worker): the second waits, then is answered from the inbox.
        slow = _command("slow")
        key = slow.idempotency_key
        await commands.send(slow)
        await commands.wait(lambda: RUNS[key] == 1, "the slow handler started")
        retry = _again(slow)
        await commands.send(retry)
        first, second = await commands.answer(slow), await commands.answer(retry)
        assert first.outcome == second.outcome == "success"
        assert first.result == second.result
        assert RUNS[key] == 1
        assert sum(service.handler_runs for service in services) == 1
        assert sum(service.inbox_answers for service in services) == 1

        # A compensation that arrives while its action runs waits for it, then runs.
        action = _command("slow")
        await commands.send(action)
        await commands.wait(lambda: RUNS[action.idempotency_key] == 1, "the action started")
        compensation = _compensation(action)
        await commands.send(compensation)
        undone = await commands.answer(compensation)
        done = await commands.answer(action)
        assert done.outcome == "success"
        assert undone.outcome == "success"
        assert undone.result == {"released": action.idempotency_key}
        assert RUNS[compensation.idempotency_key] == 1

    written, _ = await _rows(participant_database_url)
    mine = [entry for entry in written if entry[0].startswith(action.saga_id)]
    assert mine == [
        (action.idempotency_key, "action"),
        (compensation.idempotency_key, "undo"),
    ], "the compensation must commit after its action"
    assert [entry for entry in written if entry[0] == key] == [(key, "action")]


def test_participant_run_with_a_bad_target_says_so_in_one_sentence() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "participant", "run", "no_such_module_xyz:app"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: cannot import module 'no_such_module_xyz': No module named 'no_such_module_xyz'"
    ], result.stderr
    assert result.stdout == ""
