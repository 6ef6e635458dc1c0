"""``saga dlq list/show/replay`` on the real broker (RELIABILITY.md R11, R12, B14).

Poison in several queues is listed with its queue and reason, without being consumed; a
message shown has its secrets redacted; a command that no handler took is replayed once the
handler is deployed and its saga completes, while a second replay of the same message is
answered by the participant's inbox; a message the broker dead-lettered past the delivery
limit is listed as such and replayed without its dead-letter headers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from harness import Rig
from pamqp.common import FieldValue
from testapp import metadata, trio_input, trio_yaml

from contracts import StartRequest, StepCommand, StepReply, encode
from orchestrator.core.state import SagaStatus
from orchestrator.dead_letters import (
    REPLAY_COUNT_HEADER,
    DeadLetterRow,
    Replayed,
    dead_letter_queues,
)
from orchestrator.dlq import DeadLetterQueues
from orchestrator.stores.engine import create_engine
from orchestrator.topology import (
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    PARTICIPANT_DELIVERY_LIMIT,
    REPLY_QUEUE,
    START_QUEUE,
    dead_letter_queue,
    participant_queue,
    participant_topology,
)
from orchestrator.transports.amqp import AmqpTransport
from participants import Participant, StepContext
from participants.runtime import ParticipantService, ParticipantSettings

ROOT = Path(__file__).resolve().parents[3]
CANARY = "CANARY-7f3a-dlq-secret"
ALL_DLQS = dead_letter_queues(["alpha", "beta", "gamma"])

VAULT_YAML = """\
name: vault
version: 1
input:
  type: object
  required: [card, order]
  properties:
    card: {type: string, secret: true}
    order: {type: string}
defaults:
  timeout: 60s
  retry: {max_attempts: 1}
steps:
  - name: charge
    participant: alpha
    command: charge
    payload:
      card: ${input.card}
      order: ${input.order}
"""
"""alpha has no ``charge`` handler: the command is dead-lettered, its payload holding the card."""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The DLQ tools never touch the orchestrator's database: SQLite is enough."""
    return f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"


@pytest.fixture
async def dlq_rig(
    tmp_path: Path, amqp_url: str, database_url: str, participant_database_url: str
) -> AsyncIterator[Rig]:
    """The trio saga with a 60 s step timeout (no retry overtakes a replay), the vault saga
    beside it, an orchestrator and the three test participants."""
    rig = await Rig.create(
        tmp_path,
        amqp_url,
        database_url,
        participant_database_url,
        definition=trio_yaml(timeout="60s"),
    )
    (rig.definitions_dir / "vault.yaml").write_text(VAULT_YAML)
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        yield rig
    finally:
        await rig.close()


# -- helpers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


async def saga(env: Mapping[str, str], *args: str) -> Result:
    """Run ``python -m orchestrator ARGS`` with ``env`` over this process's environment."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", *args,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def cli_env(rig: Rig) -> dict[str, str]:
    return {"SAGA_AMQP_URL": rig.amqp_url, "SAGA_DEFINITIONS": str(rig.definitions_dir)}


def one_sentence(result: Result) -> str:
    """A user mistake: exit 1, one line on stderr, never a traceback."""
    assert result.code != 0, result.out
    assert "Traceback" not in result.err, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


def _new_id() -> str:
    return str(uuid.uuid4())


async def wait_rows(
    url: str, dlqs: Sequence[str], count: int, *, within: float = 20.0
) -> list[DeadLetterRow]:
    """The rows of ``dlqs`` once there are ``count`` (fails on more, or on fewer in time)."""
    async with await DeadLetterQueues.connect(url) as box:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            rows = await box.listing(dlqs)
            assert len(rows) <= count, [row.to_json() for row in rows]
            if len(rows) == count:
                return rows
            if loop.time() > deadline:
                raise AssertionError(f"{len(rows)} of {count} dead letters after {within}s")
            await asyncio.sleep(0.05)


async def publish(
    channel: AbstractChannel,
    body: bytes,
    *,
    routing_key: str,
    exchange: str = "",
    headers: Mapping[str, object] | None = None,
    **properties: Any,
) -> None:
    """Publish persistent and mandatory on a confirm channel; returns once confirmed."""
    target = (
        await channel.get_exchange(exchange, ensure=False) if exchange else channel.default_exchange
    )
    message = aio_pika.Message(
        body,
        headers={key: cast(FieldValue, value) for key, value in (headers or {}).items()},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        **properties,
    )
    await target.publish(message, routing_key=routing_key, mandatory=True)


def command(saga_id: str, step: str, name: str, payload: dict[str, Any]) -> StepCommand:
    return StepCommand(
        message_id=_new_id(),
        saga_id=saga_id,
        saga_name="trio",
        saga_version=1,
        step=step,
        kind="action",
        command=name,
        attempt=1,
        idempotency_key=f"{saga_id}:{step}:action",
        payload=payload,
    )


async def send(
    channel: AbstractChannel, message: Any, *, routing_key: str, exchange: str = ""
) -> None:
    """Publish a contract message as the product does."""
    wire = encode(message)
    await publish(
        channel,
        wire.body,
        routing_key=routing_key,
        exchange=exchange,
        headers=wire.headers,
        message_id=wire.message_id,
        type=wire.type,
        correlation_id=wire.correlation_id,
        content_type=wire.content_type,
    )


# -- list and show ------------------------------------------------------------------------


async def test_poison_in_several_queues_is_listed_shown_redacted_and_left_in_place(
    dlq_rig: Rig,
) -> None:
    rig = dlq_rig
    env = cli_env(rig)
    not_json_id, reply_id = f"not-json-{_new_id()}", _new_id()
    start = StartRequest(
        message_id=_new_id(), saga_name="vault", input={"card": CANARY, "order": "o-1"}
    )
    async with await aio_pika.connect(rig.amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(
            channel, b"{not json", routing_key=participant_queue("beta"), message_id=not_json_id
        )
        reply = StepReply.success(command("s-1", "a", "do", {}), {}, message_id=reply_id)
        future = {**json.loads(encode(reply).body), "schema_version": 2}
        await publish(
            channel,
            json.dumps(future).encode(),
            routing_key=REPLY_QUEUE,
            message_id=reply_id,
            correlation_id="s-1",
            headers={"x-saga-step": "a", "x-saga-kind": "action"},
        )
        # A start request of a schema version no one reads, with a secret in its input.
        future_start = {**json.loads(encode(start).body), "schema_version": 2}
        await publish(
            channel,
            json.dumps(future_start).encode(),
            routing_key=START_QUEUE,
            message_id=start.message_id,
            type="saga.start",
            correlation_id=start.message_id,
        )
    # A saga whose first command no handler takes: its payload carries the secret card.
    client = await rig.client()
    [accepted] = await client.start_many(
        "vault", [({"card": CANARY, "order": "o-1"}, None)], wait_seconds=30
    )
    saga_id = accepted.saga_id
    assert saga_id is not None

    rows = await wait_rows(rig.amqp_url, ALL_DLQS, 4)
    by_queue = {row.queue: row for row in rows}
    assert set(by_queue) == {
        START_QUEUE,
        REPLY_QUEUE,
        participant_queue("alpha"),
        participant_queue("beta"),
    }
    for row in rows:
        assert row.dlq == dead_letter_queue(row.queue)
        assert (row.death_reason, row.count) == ("rejected", 1)
        assert row.first_death_at is not None
    not_json = by_queue[participant_queue("beta")]
    assert not_json.id == not_json_id
    assert not_json.reason.startswith("body is not valid JSON")
    future_reply = by_queue[REPLY_QUEUE]
    assert future_reply.id == reply_id
    assert "unsupported schema version 2 for saga.reply" in future_reply.reason
    assert (future_reply.saga_id, future_reply.step, future_reply.kind) == ("s-1", "a", "action")
    no_handler = by_queue[participant_queue("alpha")]
    assert no_handler.reason == "no handler for command 'charge'"
    assert (no_handler.saga_id, no_handler.step, no_handler.kind) == (saga_id, "charge", "action")
    assert no_handler.id is not None
    future_start_row = by_queue[START_QUEUE]
    assert future_start_row.id == start.message_id
    assert future_start_row.saga_id is None, "a start request has no saga yet"

    # The command line says the same, filters by queue, and reading consumed nothing.
    listed = await saga(env, "dlq", "list", "--json")
    assert listed.code == 0, listed.err
    expected = sorted((row.to_json() for row in rows), key=lambda row: row["queue"])
    assert sorted(json.loads(listed.out), key=lambda row: row["queue"]) == expected
    again = await saga(env, "dlq", "list", "--json")
    assert sorted(json.loads(again.out), key=lambda row: row["queue"]) == expected
    only = await saga(env, "dlq", "list", "--queue", participant_queue("alpha"), "--json")
    assert json.loads(only.out) == [no_handler.to_json()]
    human = await saga(env, "dlq", "list")
    assert human.code == 0
    lines = human.out.splitlines()
    assert lines[0].split() == ["id", "queue", "death", "count", "first", "death", "reason"]
    assert any(
        line.startswith(no_handler.id) and "no handler for command 'charge'" in line
        for line in lines
    )
    assert CANARY not in listed.out + human.out

    # show: everything about the message, the secret redacted in a command and a start.
    shown = await saga(env, "dlq", "show", no_handler.id, "--json")
    assert shown.code == 0, shown.err
    detail = json.loads(shown.out)
    assert detail["reason"] == "no handler for command 'charge'"
    assert detail["properties"]["correlation_id"] == saga_id
    assert detail["properties"]["type"] == "saga.command"
    assert detail["headers"]["x-saga-step"] == "charge"
    assert detail["headers"]["x-original-queue"] == participant_queue("alpha")
    assert detail["body"]["payload"] == {"card": "***", "order": "o-1"}
    shown_start = await saga(env, "dlq", "show", start.message_id, "--json")
    assert json.loads(shown_start.out)["body"]["input"] == {"card": "***", "order": "o-1"}
    human_show = await saga(env, "dlq", "show", no_handler.id)
    assert human_show.code == 0
    assert '"card": "***"' in human_show.out
    assert "x-saga-step" in human_show.out
    assert CANARY not in shown.out + shown_start.out + human_show.out
    not_json_show = json.loads((await saga(env, "dlq", "show", not_json_id, "--json")).out)
    assert (not_json_show["body_format"], not_json_show["body"]) == ("bytes", "b'{not json'")

    # Still all there, after every read above.
    assert len(await wait_rows(rig.amqp_url, ALL_DLQS, 4)) == 4


MISTAKES = [
    (["dlq", "show", "no-such-id"], "error: no dead-lettered message with id no-such-id"),
    (["dlq", "replay", "no-such-id"], "error: no dead-lettered message with id no-such-id"),
    (["dlq", "list", "--queue", "saga.participant.alpha.dlq"], "--queue saga.participant.alpha"),
    (["dlq", "list", "--queue", "saga.participant.nobody"], "no queue 'saga.participant.nobody'"),
    (["dlq", "replay", "--all", "--queue", "x" * 300], "is not a queue name"),
    (["dlq", "replay"], "give the ids of the messages to replay, or --all"),
    (["dlq", "replay", "some-id", "--all"], "give message ids or --all, not both"),
]


async def test_mistakes_get_one_sentence(amqp_url: str, tmp_path: Path) -> None:
    # No definitions folder: the orchestrator's DLQs, and --queue, still work.
    env = {"SAGA_AMQP_URL": amqp_url, "SAGA_DEFINITIONS": str(tmp_path / "missing")}
    results = await asyncio.gather(*(saga(env, *args) for args, _ in MISTAKES))
    for (args, fragment), result in zip(MISTAKES, results, strict=True):
        assert fragment in one_sentence(result), (args, result.err)
    empty = await saga(env, "dlq", "list")
    assert (empty.code, empty.out) == (0, "no dead letters\n")
    down = {**env, "SAGA_AMQP_URL": "amqp://guest:hunter2@127.0.0.1:1/"}
    message = one_sentence(await saga(down, "dlq", "list"))
    assert message.startswith("error: cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1/")
    assert "hunter2" not in message


# -- replay -------------------------------------------------------------------------------

forgetful_beta = Participant("beta", metadata=metadata)
"""beta deployed without its ``do`` handler: the deployment mistake replay exists for."""


@forgetful_beta.command("undo")
async def _undo(payload: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {}


async def _start_forgetful_beta(rig: Rig) -> None:
    settings = ParticipantSettings(amqp_url=rig.amqp_url, database_url=rig.participant_database_url)
    transport = AmqpTransport(rig.amqp_url, name="test-forgetful-beta")
    await transport.connect()
    service = ParticipantService(
        forgetful_beta, settings, create_engine(settings.database_url), transport
    )
    await service.start()
    rig.participants["beta"] = service


async def _until(condition: Callable[[], bool], what: str, *, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.02)


async def test_a_command_without_a_handler_is_replayed_once_the_handler_is_deployed(
    dlq_rig: Rig,
) -> None:
    rig = dlq_rig
    env = cli_env(rig)
    beta_dlq = dead_letter_queue(participant_queue("beta"))
    await rig.stop_participant("beta")
    await _start_forgetful_beta(rig)
    [saga_id] = await rig.start([trio_input()])
    [row] = await wait_rows(rig.amqp_url, ALL_DLQS, 1)
    assert row.reason == "no handler for command 'do'"
    assert (row.queue, row.saga_id, row.step, row.kind) == (
        participant_queue("beta"),
        saga_id,
        "b",
        "action",
    )
    assert row.id is not None
    async with await DeadLetterQueues.connect(rig.amqp_url) as box:
        letter = await box.find(ALL_DLQS, row.id)
    assert letter is not None
    store = await rig.reader()
    before = await store.history(saga_id)

    # A dry run says what it would do and changes nothing.
    dry = await saga(env, "dlq", "replay", row.id, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert json.loads(dry.out) == [
        {"id": row.id, "queue": participant_queue("beta"), "replayed": False}
    ]
    dry_all = await saga(env, "dlq", "replay", "--all", "--dry-run")
    assert dry_all.out == f"would replay {row.id} -> {participant_queue('beta')}\n"
    assert [r.to_json() for r in await wait_rows(rig.amqp_url, ALL_DLQS, 1)] == [row.to_json()]
    assert await store.history(saga_id) == before
    record = await store.get(saga_id)
    assert record is not None
    assert record.state.status is SagaStatus.RUNNING

    # Deploy the handler, replay: the saga completes.
    await rig.stop_participant("beta")
    await rig.start_participants(["beta"])
    beta = rig.participants["beta"]
    replayed = await saga(env, "dlq", "replay", row.id)
    assert (replayed.code, replayed.err) == (0, "")
    assert replayed.out == f"replayed {row.id} -> {participant_queue('beta')}\n"
    done = (await rig.wait_terminal([saga_id]))[saga_id]
    assert done.state.status is SagaStatus.COMPLETED
    assert beta.handler_runs == 1
    assert await wait_rows(rig.amqp_url, ALL_DLQS, 0) == []

    # The same message dead-lettered twice (the at-least-once DLX may duplicate): replaying
    # the copy runs nothing; beta's inbox answers it, and the saga does not move.
    async with await aio_pika.connect(rig.amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await publish(
            channel,
            letter.body,
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=beta_dlq,
            headers=letter.headers,
            message_id=letter.message_id,
            correlation_id=letter.correlation_id,
            type=letter.type,
            content_type=letter.content_type,
            reply_to=letter.reply_to,
        )
    again = await saga(
        env, "dlq", "replay", "--all", "--queue", participant_queue("beta"), "--json"
    )
    assert again.code == 0, again.err
    assert json.loads(again.out) == [
        {"id": row.id, "queue": participant_queue("beta"), "replayed": True}
    ]
    await _until(lambda: beta.inbox_answers == 1, "beta answered the replay from its inbox")
    assert beta.handler_runs == 1
    effects = [(e.step, e.kind) for e in await rig.effects() if e.saga_id == saga_id]
    assert effects == [("a", "action"), ("b", "action"), ("c", "action")]
    end = await store.get(saga_id)
    assert end is not None
    assert end.version == done.version

    # Gone from the DLQ now: a replay of it says so and fails.
    gone = await saga(env, "dlq", "replay", row.id)
    assert one_sentence(gone) == f"error: no dead-lettered message with id {row.id}"


async def test_a_message_past_the_delivery_limit_is_listed_and_replayed_clean(
    amqp_url: str,
) -> None:
    transport = AmqpTransport(amqp_url, name="test-dlq-declare")
    await transport.connect()
    try:
        await transport.declare(participant_topology("gamma"))
    finally:
        await transport.close()
    queue, dlq = participant_queue("gamma"), dead_letter_queue(participant_queue("gamma"))
    poison = command("s-9", "c", "do", {"n": 1})
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await send(channel, poison, exchange=COMMANDS_EXCHANGE, routing_key="gamma")
        # A consumer that never acks: each requeue is a delivery, until the broker gives up.
        declared = await channel.declare_queue(queue, passive=True)
        deliveries = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            incoming = await declared.get(no_ack=False, fail=False)
            if incoming is not None:
                deliveries += 1
                await incoming.nack(requeue=True)
                continue
            if (await channel.declare_queue(dlq, passive=True)).declaration_result.message_count:
                break
            assert loop.time() < deadline, "the broker never dead-lettered the message"
            await asyncio.sleep(0.02)
        assert deliveries == PARTICIPANT_DELIVERY_LIMIT + 1, "the first delivery, then the limit"

        [row] = await wait_rows(amqp_url, dead_letter_queues(["gamma"]), 1)
        assert (row.id, row.queue, row.dlq) == (poison.message_id, queue, dlq)
        assert (row.death_reason, row.count) == ("delivery_limit", 1)
        assert "delivery limit" in row.reason
        assert (row.saga_id, row.step, row.kind) == ("s-9", "c", "action")
        assert row.first_death_at is not None

        # Two more in the same DLQ that must stay: one naming another queue than the one it
        # died in (a forged header), and one for a queue that does not exist.
        forged_id = _new_id()
        await publish(
            channel,
            b"{}",
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=dlq,
            headers={"x-dead-letter-reason": "forged", "x-original-queue": START_QUEUE},
            message_id=forged_id,
        )
        ghost = await channel.declare_queue("ghost.dlq", durable=True)
        await publish(channel, b"{}", routing_key="ghost.dlq", message_id="ghostly")

        async with await DeadLetterQueues.connect(amqp_url) as box:
            results = await box.replay([dlq, ghost.name], None)
            assert results[0] == Replayed(poison.message_id, queue, replayed=True)
            assert results[1].id == forged_id
            assert not results[1].replayed
            assert "sits in" in str(results[1].problem)
            assert results[2] == Replayed(
                "ghostly",
                "ghost",
                replayed=False,
                problem="there is no queue 'ghost' to send it to",
            )
            assert [r.id for r in await box.listing([dlq, ghost.name])] == [forged_id, "ghostly"]
            missing = await box.replay([dlq], ["nope"])
            assert missing == [
                Replayed(
                    "nope", None, replayed=False, problem="no dead-lettered message with id nope"
                )
            ]

        # The replay is the original message: its id, properties and headers, without the
        # broker's dead-letter bookkeeping, counted as a replay.
        back = await declared.get(no_ack=True, fail=False)
        assert back is not None
        wire = encode(poison)
        assert back.body == wire.body
        assert (back.message_id, back.correlation_id, back.type) == (
            poison.message_id,
            "s-9",
            "saga.command",
        )
        assert back.content_type == "application/json"
        assert back.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        headers = dict(back.headers or {})
        assert not [key for key in headers if "death" in key], headers
        assert headers.pop(REPLAY_COUNT_HEADER) == 1
        headers.pop("x-delivery-count", None)  # the quorum queue's own count of this delivery
        assert headers == wire.headers
