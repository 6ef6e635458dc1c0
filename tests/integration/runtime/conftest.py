"""Fixtures for the runtime tests: a vhost per test and a :class:`harness.Rig`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from broker import BrokerUnavailable, RabbitService
from harness import Rig
from services import PostgresService


@pytest.fixture(scope="session")
def rabbit_service() -> Iterator[RabbitService]:
    """Where RabbitMQ is (found on first use)."""
    service = RabbitService(os.environ)
    yield service
    service.close()


@pytest.fixture
async def amqp_url(rabbit_service: RabbitService) -> AsyncIterator[str]:
    """A fresh vhost on the test broker, its URL."""
    try:
        vhost = rabbit_service.fresh_vhost()
        url = await vhost.__aenter__()
    except BrokerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield url
    finally:
        await vhost.__aexit__(None, None, None)


@pytest.fixture
async def participant_database_url(
    database_url: str, tmp_path: Path, postgres_service: PostgresService
) -> AsyncIterator[str]:
    """The participants' database, of the same kind as the orchestrator's."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'participants.db'}"
        return
    server = await postgres_service.server()
    async with server.fresh_database() as url:
        yield url


@pytest.fixture
async def rig(
    tmp_path: Path, amqp_url: str, database_url: str, participant_database_url: str
) -> AsyncIterator[Rig]:
    """An orchestrator and the three test participants, running."""
    rig = await Rig.create(tmp_path, amqp_url, database_url, participant_database_url)
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        yield rig
    finally:
        await rig.close()
