"""Least privilege (RELIABILITY.md B15): deploy/rabbitmq-least-privilege.sh applied to a
vhost of the test's own; a saga runs end to end with the per-service users it made, and
each user is refused what is not its own (participant alpha may neither publish commands
nor read beta's queue, nor configure anything; guest may not enter the vhost)."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage
from broker import RabbitService, with_vhost
from testapp import trio_input, trio_yaml

from orchestrator import migrations
from orchestrator.core.state import SagaStatus
from orchestrator.dlq import DeadLetterQueues
from orchestrator.senders import ReplySenders
from orchestrator.topology import (
    COMMANDS_EXCHANGE,
    DLQ_SUFFIX,
    REPLY_QUEUE,
    START_QUEUE,
    orchestrator_topology,
    participant_queue,
)
from orchestrator.transport import TransportUnavailable
from orchestrator.transports.amqp import AmqpTransport

from .security_rig import PerUserRig, as_user

pytestmark = pytest.mark.rabbitmq

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "rabbitmq-least-privilege.sh"
PARTICIPANT_NAMES = ("alpha", "beta", "gamma")


@dataclass
class Deployment:
    """A vhost the script set up: its name, the user prefix, and each role's password."""

    rabbit: RabbitService
    base_url: str
    vhost: str
    prefix: str
    passwords: dict[str, str]

    def user(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def url(self, role: str) -> str:
        """The vhost's URL for the user of ``role`` (``orchestrator``, ``participant-alpha``...)."""
        user = self.user(role)
        return as_user(with_vhost(self.base_url, self.vhost), user, self.passwords[user])

    async def apply(self, *options: str, env: Mapping[str, str] = {}) -> str:
        """Run the script on this vhost; its standard output (a failure shows stderr)."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "OTEL_"))}
        environ.update(
            SAGA_PYTHON=sys.executable,
            SAGA_DEPLOY_AMQP_URL=self.base_url,
            PYTHONPATH=os.pathsep.join(sys.path),
            **env,
        )
        process = await asyncio.create_subprocess_exec(
            "bash", str(SCRIPT), "--user-prefix", self.prefix, *options, self.vhost,
            *PARTICIPANT_NAMES,
            env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(90):
            stdout, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        return stdout.decode()

    async def remove(self) -> None:
        """Delete the users the script made and the vhost."""
        listed = await self.rabbit.rabbitmqctl("list_users", "--quiet", "--no-table-headers")
        for line in listed.splitlines():
            user = line.split("\t")[0]
            if user.startswith(self.prefix):
                await self.rabbit.rabbitmqctl("delete_user", user)
        vhosts = await self.rabbit.rabbitmqctl("list_vhosts", "--quiet", "--no-table-headers")
        if self.vhost in vhosts.split():
            await self.rabbit.rabbitmqctl("delete_vhost", self.vhost)


async def _ignore(message: AbstractIncomingMessage) -> None:
    """A consumer callback that is never called (the consume is refused)."""


def _generated(output: str) -> dict[str, str]:
    """The ``user password`` lines the script prints once for the passwords it made."""
    lines = output.split("generated passwords (shown this once; store them now):\n", 1)
    if len(lines) == 1:
        return {}
    found = {}
    for line in lines[1].splitlines():
        if not line.startswith("  "):
            break
        user, password = line.split()
        found[user] = password
    return found


@pytest.fixture
async def deployment(rabbit_service: RabbitService) -> AsyncIterator[Deployment]:
    """The script applied to a fresh vhost (guest's rights on it removed), undone after."""
    tag = secrets.token_hex(4)
    made = Deployment(
        rabbit_service, await rabbit_service.url(), f"saga-test-lp-{tag}", f"lp-{tag}-", {}
    )
    try:
        orchestrator_password = secrets.token_hex(12)
        output = await made.apply(
            "--restrict-guest", env={"SAGA_PASSWORD_ORCHESTRATOR": orchestrator_password}
        )
        made.passwords = _generated(output)
        assert made.user("orchestrator") not in made.passwords  # given, so not printed
        assert orchestrator_password not in output
        made.passwords[made.user("orchestrator")] = orchestrator_password
        yield made
    finally:
        await made.remove()


async def _rig(tmp_path: Path, deployment: Deployment) -> PerUserRig:
    database = f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"
    (tmp_path / "sagas").mkdir()
    (tmp_path / "sagas" / "trio.yaml").write_text(trio_yaml())
    await asyncio.to_thread(migrations.upgrade, database)
    rig = PerUserRig(
        deployment.url("orchestrator"),
        database,
        f"sqlite+aiosqlite:///{tmp_path / 'participants.db'}",
        tmp_path / "sagas",
    )
    for name in PARTICIPANT_NAMES:
        rig.participant_urls[name] = deployment.url(f"participant-{name}")
    rig.client_url = deployment.url("client")
    rig.reply_senders = ReplySenders(
        {name: deployment.user(f"participant-{name}") for name in PARTICIPANT_NAMES}
    )
    return rig


async def test_per_service_users_run_sagas_and_are_refused_what_is_not_theirs(
    tmp_path: Path, deployment: Deployment
) -> None:
    rig = await _rig(tmp_path, deployment)
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        ids = await rig.start([trio_input(), trio_input(b={"fail": "permanent"})])
        done = await rig.wait_terminal(ids)
        assert [done[i].state.status for i in ids] == [
            SagaStatus.COMPLETED,
            SagaStatus.COMPENSATED,
        ]
    finally:
        await rig.close()

    alpha = deployment.url("participant-alpha")
    refused_for = f"refused for user '{deployment.user('participant-alpha')}'"
    message = aio_pika.Message(b"{}", message_id="forged-command")
    # Alpha publishes a command (to beta) on the commands exchange: refused.
    async with await aio_pika.connect(alpha) as connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as published:
            await exchange.publish(message, routing_key="beta")
    assert f"access to exchange '{COMMANDS_EXCHANGE}'" in str(published.value)
    assert refused_for in str(published.value)
    # Alpha consumes beta's queue: refused.
    async with await aio_pika.connect(alpha) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(participant_queue("beta"), ensure=True)  # passive
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as consumed:
            await queue.consume(_ignore)
    assert f"access to queue '{participant_queue('beta')}'" in str(consumed.value)
    assert refused_for in str(consumed.value)
    # Alpha may not configure either: deleting the commands exchange is refused.
    async with await aio_pika.connect(alpha) as connection:
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.exchange_delete(COMMANDS_EXCHANGE)
    # Guest's rights on the vhost were removed (--restrict-guest).
    guest = with_vhost(deployment.base_url, deployment.vhost)
    with pytest.raises(TransportUnavailable) as entered:
        await AmqpTransport(guest, name="test-guest").connect()
    assert str(entered.value).endswith(
        f"the broker refused to open vhost '{deployment.vhost}' for user 'guest': "
        "the vhost does not exist or the user has no permissions on it"
    )

    # The DLQ operator reads every DLQ (empty here) and nothing else.
    dlqs = [
        q.name
        for q in orchestrator_topology(PARTICIPANT_NAMES).queues
        if q.name.endswith(DLQ_SUFFIX)
    ]
    async with await DeadLetterQueues.connect(deployment.url("dlq-operator")) as box:
        assert await box.listing(dlqs) == []
    async with await aio_pika.connect(deployment.url("dlq-operator")) as connection:
        channel = await connection.channel()
        queue = await channel.get_queue(REPLY_QUEUE, ensure=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.get(no_ack=False, fail=False)


async def test_the_script_is_idempotent_and_limits_only_the_work_queues(
    deployment: Deployment,
) -> None:
    # Again, with the passwords it printed: nothing new is generated, every user still works.
    env = {
        f"SAGA_PASSWORD_{role.upper().replace('-', '_')}": deployment.passwords[
            deployment.user(role)
        ]
        for role in ("orchestrator", "client", "dlq-operator", "deployer")
    } | {
        f"SAGA_PASSWORD_PARTICIPANT_{name.upper()}": deployment.passwords[
            deployment.user(f"participant-{name}")
        ]
        for name in PARTICIPANT_NAMES
    }
    output = await deployment.apply(env=env)
    assert "generated passwords" not in output
    for role in ("orchestrator", "participant-beta", "client", "dlq-operator"):
        connection = await aio_pika.connect(deployment.url(role))
        await connection.close()

    listing = await deployment.rabbit.rabbitmqctl(
        "list_queues", "--quiet", "--no-table-headers", "-p", deployment.vhost, "name", "policy"
    )
    policies = dict([*line.split("\t"), ""][:2] for line in listing.splitlines())
    work = {START_QUEUE, REPLY_QUEUE, *(participant_queue(n) for n in PARTICIPANT_NAMES)}
    assert {name for name, policy in policies.items() if policy} == work
    assert set(policies) == work | {f"{name}{DLQ_SUFFIX}" for name in work}
    permissions = await deployment.rabbit.rabbitmqctl(
        "list_permissions", "--quiet", "--no-table-headers", "-p", deployment.vhost
    )
    configure = {line.split("\t")[0]: line.split("\t")[1] for line in permissions.splitlines()}
    assert configure[deployment.user("deployer")] == "^saga\\."
    assert configure[deployment.user("orchestrator")] == "^$"
    assert configure[deployment.user("participant-alpha")] == "^$"
    assert "guest" not in configure
