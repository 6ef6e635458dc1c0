"""A thousand fuzzed bodies into the orchestrator's and a participant's queues: every one is
dead-lettered, no consumer dies, and a good saga started afterwards still completes."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import aio_pika
import pytest
from harness import Rig
from testapp import trio_input

from contracts import MessageRejected, StepCommand, decode, encode
from orchestrator.core.state import SagaStatus
from orchestrator.topology import REPLY_QUEUE, dead_letter_queue, participant_queue

SEED = random.SystemRandom().randrange(2**32)
BODIES = 1000


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Bad input is refused before any query: SQLite is enough."""
    return f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"


def _valid_command() -> dict[str, object]:
    command = StepCommand(
        message_id="m-1",
        saga_id="s-1",
        saga_name="trio",
        saga_version=1,
        step="a",
        kind="action",
        command="do",
        attempt=1,
        idempotency_key="s-1:a:action",
        payload={"behaviour": {}},
    )
    loaded: dict[str, object] = json.loads(encode(command).body)
    return loaded


def fuzzed_body(rng: random.Random) -> bytes:
    """One body that no consumer may accept: random bytes, broken or hostile JSON, or a valid
    message with one field mutated into something invalid."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:
        valid = json.dumps(_valid_command()).encode()
        return valid[: rng.randrange(0, len(valid))]  # truncated
    if kind == 2:
        depth = rng.randrange(33, 20_000)
        return b"[" * depth + b"]" * depth
    if kind == 3:
        return rng.choice(
            [b"1e400", b"NaN", b'{"type": "saga.reply", "attempt": 1e400}', b"\xff\xfe"]
        )
    message = _valid_command()
    field = rng.choice(sorted(message))
    message[field] = rng.choice([None, -1, "", [], {}, "x" * 5000, True, 2**70])
    if kind == 5:
        message["unexpected"] = rng.random()
    body = json.dumps(message).encode()
    try:
        decode(body)
    except MessageRejected:
        return body
    message["type"] = "saga.nope"  # the mutation happened to be valid (payload {}, say)
    return json.dumps(message).encode()


async def test_fuzzed_bodies_are_dead_lettered_and_the_queues_stay_served(rig: Rig) -> None:
    print(f"fuzz seed {SEED}")
    rng = random.Random(SEED)
    targets = [REPLY_QUEUE, participant_queue("alpha")]
    connection = await aio_pika.connect(rig.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        bodies = [fuzzed_body(rng) for _ in range(BODIES)]
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=f"fuzz-{n}"),
                    routing_key=targets[n % 2],
                )
                for n, body in enumerate(bodies)
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        while True:
            depths = []
            for queue in targets:
                declared = await channel.declare_queue(dead_letter_queue(queue), passive=True)
                depths.append(declared.declaration_result.message_count or 0)
            if sum(depths) >= BODIES:
                break
            assert loop.time() < deadline, f"only {depths} of {BODIES} dead-lettered (seed {SEED})"
            await asyncio.sleep(0.2)
        assert depths == [BODIES // 2, BODIES // 2], f"seed {SEED}"
        for queue in targets:  # nothing left behind, nothing requeued
            declared = await channel.declare_queue(queue, passive=True)
            assert declared.declaration_result.message_count == 0
    finally:
        await connection.close()
    [saga_id] = await rig.start([trio_input()])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED
