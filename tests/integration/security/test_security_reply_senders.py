"""The reply sender (RELIABILITY.md B11) on the real broker, with a RabbitMQ user per
service made for the test: the broker refuses a forged ``user_id``; the orchestrator
dead-letters a reply from another participant's user, and the saga goes on when the right
reply comes; an orchestrator whose mapping leaves out a participant refuses to start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from broker import RabbitService
from testapp import trio_input, trio_yaml

from contracts import StepCommand, StepReply, decode, encode
from orchestrator import migrations
from orchestrator.core.state import SagaStatus, StepStatus
from orchestrator.dlq import DeadLetterQueues
from orchestrator.senders import ReplySenders
from orchestrator.topology import REPLY_QUEUE, Topology, orchestrator_queues, participant_queue
from orchestrator.transport import publish_wire
from orchestrator.transports.amqp import ORIGINAL_USER_HEADER, AmqpTransport

from .security_rig import BrokerUsers, PerUserRig, saga_cli, wait_depth

pytestmark = pytest.mark.rabbitmq

REPLY_DLQ = f"{REPLY_QUEUE}.dlq"


@pytest.fixture
async def users(rabbit_service: RabbitService, amqp_url: str) -> AsyncIterator[BrokerUsers]:
    """Users made in the test's vhost, deleted after the test."""
    made = BrokerUsers(rabbit_service, amqp_url)
    try:
        yield made
    finally:
        await made.delete()


async def test_the_broker_refuses_a_forged_user_id(amqp_url: str, users: BrokerUsers) -> None:
    setup = AmqpTransport(amqp_url, name="test-setup")
    await setup.connect()
    await setup.declare(Topology(queues=tuple(orchestrator_queues())))
    await setup.close()
    alpha_url = await users.add("alpha")

    connection = await aio_pika.connect(alpha_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        forged = aio_pika.Message(b"{}", user_id=users.name("beta"), message_id="forged-1")
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed) as caught:
            await channel.default_exchange.publish(forged, routing_key=REPLY_QUEUE)
    finally:
        await connection.close()
    assert (
        f"user_id property set to '{users.name('beta')}' but authenticated user was "
        f"'{users.name('alpha')}'" in str(caught.value)
    )
    await wait_depth(amqp_url, REPLY_QUEUE, 0)


async def _rig(tmp_path: Path, users: BrokerUsers, amqp_url: str) -> PerUserRig:
    database = f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"
    (tmp_path / "sagas").mkdir()
    # Long timeouts: beta is held back on purpose, and its step must not time out meanwhile.
    (tmp_path / "sagas" / "trio.yaml").write_text(trio_yaml(timeout="60s"))
    await asyncio.to_thread(migrations.upgrade, database)
    rig = PerUserRig(
        await users.add("orchestrator"),
        database,
        f"sqlite+aiosqlite:///{tmp_path / 'participants.db'}",
        tmp_path / "sagas",
    )
    for name in ("alpha", "beta", "gamma"):
        rig.participant_urls[name] = await users.add(name)
    rig.client_url = await users.add("client")
    rig.reply_senders = ReplySenders(
        {name: users.name(name) for name in ("alpha", "beta", "gamma")}
    )
    return rig


async def test_a_reply_from_another_participants_user_is_dead_lettered_and_the_saga_waits(
    tmp_path: Path, amqp_url: str, users: BrokerUsers
) -> None:
    rig = await _rig(tmp_path, users, amqp_url)
    try:
        await rig.start_orchestrator()
        await rig.start_participants(["alpha", "gamma"])
        [saga_id] = await rig.start([trio_input()])
        await wait_depth(amqp_url, participant_queue("beta"), 1)

        # Alpha's service answers for beta's step (the command read here only to fill in
        # the reply): its transport stamps alpha's own user, which the broker validates.
        command = await _peek(amqp_url, participant_queue("beta"))
        assert command.step == "b"
        forged = StepReply.success(command, {"by": "alpha"}, message_id="forged-reply-b")
        alpha = AmqpTransport(rig.participant_urls["alpha"], name="test-alpha-forger")
        await alpha.connect()
        try:
            assert await publish_wire(alpha, encode(forged), routing_key=REPLY_QUEUE)
        finally:
            await alpha.close()

        await wait_depth(amqp_url, REPLY_DLQ, 1)
        async with await DeadLetterQueues.connect(amqp_url) as dlqs:
            [row] = await dlqs.listing([REPLY_DLQ])
            letter = await dlqs.find([REPLY_DLQ], "forged-reply-b")
        assert row.reason == (
            f"reply for step 'b' of saga {saga_id} came from user '{users.name('alpha')}', "
            f"but participant 'beta' is '{users.name('beta')}'"
        )
        assert letter is not None
        assert letter.headers[ORIGINAL_USER_HEADER] == users.name("alpha")
        store = await rig.reader()
        waiting = await store.get(saga_id)
        assert waiting is not None
        assert waiting.state.status is SagaStatus.RUNNING
        assert waiting.state.steps[1].status is StepStatus.RUNNING
        history = await store.history(saga_id)
        assert [e.type for e in history if e.step == "b"] == ["step_sent"]

        # The real beta, with its own user: its reply is accepted and the saga completes.
        await rig.start_participants(["beta"])
        record = (await rig.wait_terminal([saga_id]))[saga_id]
        assert record.state.status is SagaStatus.COMPLETED
        assert record.state.steps[1].result == {"by": "beta", "step": "b", "kind": "action"}

        # The normal path with per-service users, start to end.
        more = await rig.start([trio_input(), trio_input(b={"fail": "permanent"})])
        done = await rig.wait_terminal(more)
        assert [done[i].state.status for i in more] == [
            SagaStatus.COMPLETED,
            SagaStatus.COMPENSATED,
        ]
        await wait_depth(amqp_url, REPLY_DLQ, 1)  # nothing else was refused
    finally:
        await rig.close()


async def _peek(url: str, queue: str) -> StepCommand:
    """The first command in ``queue``, handed back to the broker unconsumed."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        message = await declared.get(no_ack=False)
        assert message is not None
        command = decode(message.body, message.headers, expect=StepCommand)
        await message.nack(requeue=True)
    finally:
        await connection.close()
    assert isinstance(command, StepCommand)
    return command


async def test_an_orchestrator_whose_mapping_leaves_out_a_participant_refuses_to_start(
    tmp_path: Path, amqp_url: str
) -> None:
    definitions = tmp_path / "sagas"
    definitions.mkdir()
    (definitions / "trio.yaml").write_text(trio_yaml())
    env = {
        "SAGA_AMQP_URL": amqp_url,
        "SAGA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}",
        "SAGA_DEFINITIONS": str(definitions),
        "SAGA_REPLY_USERS": "alpha=alpha-svc,beta=beta-svc",
    }
    done = await saga_cli("orchestrator", "run", env=env)
    assert done.status == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: SAGA_REPLY_USERS has no user for participant 'gamma', which the saga "
        "definitions use; add gamma=<its RabbitMQ user> to it"
    )
    assert "Traceback" not in done.stderr

    bad = await saga_cli("orchestrator", "run", env=env | {"SAGA_REPLY_USERS": "alpha"})
    assert bad.status == 1
    assert "error: SAGA_REPLY_USERS has 'alpha', which is not participant=user" in bad.stderr
