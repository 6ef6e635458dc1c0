"""A thousand fuzzed bodies into the orchestrator's and a participant's queues: every one is
dead-lettered, no consumer dies, and a good saga started afterwards still completes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from harness import Rig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testapp import trio_input

from contracts import MessageRejected, StepCommand, decode, encode
from orchestrator.core.state import SagaStatus
from orchestrator.topology import REPLY_QUEUE, dead_letter_queue, participant_queue

BATCH = 10
EXAMPLES = 100
"""EXAMPLES x BATCH = 1,000 fuzzed bodies."""
TARGETS = (REPLY_QUEUE, participant_queue("alpha"))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Bad input is refused before any query: SQLite is enough."""
    return f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"


def _valid_command() -> dict[str, Any]:
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
    loaded: dict[str, Any] = json.loads(encode(command).body)
    return loaded


VALID = json.dumps(_valid_command()).encode()
BAD_VALUES: list[object] = [None, -1, "", [], {}, "x" * 5000, True, 2**70, 1.5]


def _refused(body: bytes) -> bytes:
    """``body`` if no consumer may accept it; else the same message with an unknown type."""
    try:
        decode(body)
    except MessageRejected:
        return body
    message = json.loads(body)
    message["type"] = "saga.nope"  # a mutation that happened to stay valid (payload {}, say)
    return json.dumps(message).encode()


def _mutated(field: str, value: object, extra: bool) -> bytes:
    message = _valid_command()
    message[field] = value
    if extra:
        message["unexpected"] = 1
    return _refused(json.dumps(message).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

bodies = st.one_of(
    st.binary(max_size=300),
    st.integers(0, len(VALID) - 1).map(lambda n: VALID[:n]),
    st.integers(33, 20_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.sampled_from([b"1e400", b"NaN", b'{"type": "saga.reply", "attempt": 1e400}', b"\xff\xfe"]),
    st.builds(
        _mutated,
        st.sampled_from(sorted(_valid_command())),
        st.sampled_from(BAD_VALUES),
        st.booleans(),
    ),
    json_values.map(lambda value: _refused(json.dumps(value).encode())),
)


async def _depth(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def _until(channel: aio_pika.abc.AbstractChannel, wanted: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        depths = {queue: await _depth(channel, queue) for queue in wanted}
        if depths == wanted:
            return
        assert loop.time() < deadline, f"queue depths {depths}, expected {wanted}"
        await asyncio.sleep(0.05)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(bodies, min_size=BATCH, max_size=BATCH))
async def test_fuzzed_bodies_are_dead_lettered_and_the_queues_stay_served(
    rig: Rig, batch: list[bytes]
) -> None:
    connection = await aio_pika.connect(rig.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        before = {
            dead_letter_queue(q): await _depth(channel, dead_letter_queue(q)) for q in TARGETS
        }
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=f"fuzz-{n}"), routing_key=TARGETS[n % 2]
                )
                for n, body in enumerate(batch)
            )
        )
        # Every body dead-lettered; nothing left in (or requeued to) the queues themselves.
        wanted = {dlq: count + BATCH // 2 for dlq, count in before.items()}
        await _until(channel, {**wanted, **dict.fromkeys(TARGETS, 0)})
    finally:
        await connection.close()
    if sum(before.values()) % 200 == 0:  # every 20 batches: the queues are still served
        [saga_id] = await rig.start([trio_input()])
        record = (await rig.wait_terminal([saga_id]))[saga_id]
        assert record.state.status is SagaStatus.COMPLETED
