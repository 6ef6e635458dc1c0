"""Helpers of the security tests: broker users made for one test, the runtime rig with a
broker user per service, and the ``saga`` command line run as a child process."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

import aio_pika
from broker import RabbitService
from harness import PARTICIPANTS, Rig
from yarl import URL

from orchestrator.client import StartClient
from orchestrator.senders import ReplySenders
from orchestrator.settings import Settings
from orchestrator.stores.engine import create_engine
from orchestrator.transports.amqp import AmqpTransport
from participants.runtime import ParticipantService, ParticipantSettings


def vhost_of(url: str) -> str:
    """The vhost a broker URL names."""
    return unquote(urlsplit(url).path[1:]) or "/"


def as_user(url: str, user: str, password: str) -> str:
    """``url`` with another user and password."""
    return str(URL(url).with_user(user).with_password(password))


class BrokerUsers:
    """RabbitMQ users made for one test (names unique to it), all deleted by :meth:`delete`."""

    def __init__(self, rabbit: RabbitService, base_url: str) -> None:
        self._rabbit = rabbit
        self._base_url = base_url
        self.tag = secrets.token_hex(4)
        self.names: list[str] = []

    def name(self, role: str) -> str:
        """The user name this test uses for ``role``."""
        return f"sec-{self.tag}-{role}"

    async def add(self, role: str, permissions: tuple[str, str, str] = (".*", ".*", ".*")) -> str:
        """Make the user for ``role`` with these permissions on the test's vhost; its URL."""
        user, password = self.name(role), secrets.token_hex(12)
        await self._rabbit.rabbitmqctl("add_user", user, password)
        self.names.append(user)
        vhost = vhost_of(self._base_url)
        await self._rabbit.rabbitmqctl("set_permissions", "-p", vhost, user, *permissions)
        return as_user(self._base_url, user, password)

    async def delete(self) -> None:
        """Delete every user this test made (those already gone are skipped)."""
        listed = await self._rabbit.rabbitmqctl("list_users", "--quiet", "--no-table-headers")
        present = {line.split("\t")[0] for line in listed.splitlines()}
        for user in self.names:
            if user in present:
                await self._rabbit.rabbitmqctl("delete_user", user)


@dataclass
class PerUserRig(Rig):
    """The runtime rig with one broker user per service: the orchestrator connects with
    ``amqp_url``, each participant with its own URL, and the start client with another."""

    participant_urls: dict[str, str] = field(default_factory=dict)
    client_url: str | None = None
    reply_senders: ReplySenders | None = None

    def settings(self) -> Settings:
        return replace(super().settings(), reply_senders=self.reply_senders)

    async def start_participants(self, names: Iterable[str] = PARTICIPANTS) -> None:
        for name in names:
            url = self.participant_urls.get(name, self.amqp_url)
            settings = ParticipantSettings(amqp_url=url, database_url=self.participant_database_url)
            transport = AmqpTransport(url, name=f"test-{name}")
            await transport.connect()
            service = ParticipantService(
                PARTICIPANTS[name], settings, create_engine(settings.database_url), transport
            )
            await service.start()
            self.participants[name] = service

    async def client(self) -> StartClient:
        if self._client is None:
            self._client_transport = AmqpTransport(
                self.client_url or self.amqp_url, name="test-client"
            )
            await self._client_transport.connect()
            self._client = StartClient(self._client_transport)
        return self._client


async def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare: nothing is read)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await connection.close()


async def wait_depth(url: str, queue: str, depth: int, *, within: float = 30.0) -> None:
    """Poll until ``queue`` holds ``depth`` messages."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (seen := await queue_depth(url, queue)) != depth:
        if loop.time() > deadline:
            raise AssertionError(f"{queue} holds {seen} messages, not {depth}, after {within}s")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Finished:
    """What a ``saga`` command did."""

    status: int
    stdout: str
    stderr: str


async def saga_cli(*args: str, env: Mapping[str, str]) -> Finished:
    """Run ``python -m orchestrator ARGS`` with only ``env`` of the ``SAGA_*`` settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("SAGA_", "OTEL_"))}
    environ.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", *args,
        env=environ, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())
