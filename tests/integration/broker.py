"""Finding RabbitMQ for the integration tests, and a fresh vhost per test.

``SAGA_TEST_AMQP_URL`` when it is set, else the local default when it answers, else a
testcontainers RabbitMQ. Each test gets its own vhost (queue names are fixed by the
contract, so vhosts are how tests stay apart), made and deleted with ``rabbitmqctl``
(inside the container when there is one). A test that cannot reach a broker fails with a
message that says so; it never skips.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika

__all__ = ["DEFAULT_AMQP_URL", "BrokerUnavailable", "RabbitService"]

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class BrokerUnavailable(Exception):
    """RabbitMQ cannot be reached or managed; the message says how to fix it."""


def with_vhost(url: str, vhost: str) -> str:
    """``url`` pointing at ``vhost``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


class RabbitService:
    """Finds a broker once per test session and makes vhosts on it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._configured = environ.get("SAGA_TEST_AMQP_URL")
        self._url: str | None = None
        self._failure: str | None = None
        self._container: Any = None

    async def url(self) -> str:
        """The broker's URL (its default vhost); :class:`BrokerUnavailable` if none."""
        if self._url is None and self._failure is None:
            try:
                self._url = await self._find()
            except BrokerUnavailable as exc:
                self._failure = str(exc)
        if self._url is None:
            raise BrokerUnavailable(self._failure)
        return self._url

    async def _find(self) -> str:
        url = self._configured or DEFAULT_AMQP_URL
        cause = await _probe(url)
        if cause is None:
            if shutil.which("rabbitmqctl") is None:
                raise BrokerUnavailable(
                    f"RabbitMQ answers at {_masked(url)} but rabbitmqctl is not installed here;"
                    " the tests need it to make a vhost per test"
                )
            return url
        if self._configured:
            raise BrokerUnavailable(f"RabbitMQ is not reachable at {_masked(url)}: {cause}")
        try:
            return await asyncio.to_thread(self._start_container)
        except Exception as exc:
            raise BrokerUnavailable(
                f"RabbitMQ is not reachable at {_masked(url)}: {cause}; set SAGA_TEST_AMQP_URL"
                f" (and no testcontainers RabbitMQ either: {type(exc).__name__}: {exc})"
            ) from None

    def _start_container(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.rabbitmq import RabbitMqContainer
        container = RabbitMqContainer("rabbitmq:3.10-management")
        container.start()
        self._container = container
        host = container.get_container_host_ip()
        port = container.get_exposed_port(5672)
        return f"amqp://guest:guest@{host}:{port}/"

    async def rabbitmqctl(self, *args: str) -> str:
        """Run ``rabbitmqctl`` (in the container if there is one); its output."""
        if self._container is not None:
            result = await asyncio.to_thread(self._container.exec, ["rabbitmqctl", *args])
            if result.exit_code != 0:
                raise BrokerUnavailable(f"rabbitmqctl {' '.join(args)} failed: {result.output!r}")
            return str(result.output.decode())
        return await run(["rabbitmqctl", *args])

    @asynccontextmanager
    async def fresh_vhost(self) -> AsyncIterator[str]:
        """A new vhost for one test (its URL), deleted afterwards."""
        base = await self.url()
        vhost = f"saga-test-{secrets.token_hex(6)}"
        await self.rabbitmqctl("add_vhost", vhost)
        user = urlsplit(base).username or "guest"
        await self.rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        try:
            yield with_vhost(base, vhost)
        finally:
            await self.rabbitmqctl("delete_vhost", vhost)

    def close(self) -> None:
        """Stop the container, if one was started."""
        if self._container is not None:
            self._container.stop()
            self._container = None


async def run(command: Sequence[str]) -> str:
    """Run a command; its stdout, or :class:`BrokerUnavailable` with its stderr."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise BrokerUnavailable(
            f"{' '.join(command)} failed ({process.returncode}): {stderr.decode().strip()}"
        )
    return stdout.decode()


async def _probe(url: str) -> str | None:
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    await connection.close()
    return None


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url
