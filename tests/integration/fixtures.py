"""Fixtures for tests against real services (tests/integration and tests/faults).

``amqp_url`` is a fresh RabbitMQ vhost per test; ``rig`` (runtime tests) an in-process
orchestrator and the test participants on that vhost and on ``database_url``.

``database_url`` runs a test on both databases: a SQLite file in the test's tmp_path and
a fresh PostgreSQL database (created for the test, dropped after it). ``migrated_store``
is a :class:`SqlStore` on that database, migrated to the newest revision.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from broker import BrokerUnavailable, RabbitService
from services import PostgresServer, PostgresService, ServiceUnavailable

from orchestrator import migrations
from orchestrator.stores import SqlStore

if TYPE_CHECKING:
    from harness import Rig


SEED_ENV = "SAGA_TEST_SEED"


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The seed of a test's randomness: ``SAGA_TEST_SEED`` or a fresh one, printed."""
    raw = os.environ.get(SEED_ENV)
    value = int(raw) if raw else secrets.randbits(32)
    print(f"\n{request.node.name}: seed {value} (repeat with {SEED_ENV}={value})")
    return value


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[PostgresService]:
    """Where PostgreSQL is (found on first use; a container is stopped at the end)."""
    service = PostgresService(os.environ)
    yield service
    service.close()


async def _postgres(service: PostgresService) -> PostgresServer:
    try:
        return await service.server()
    except ServiceUnavailable as exc:
        failure = str(exc)
    # Outside the except block, so the report is the sentence alone, not a chained trace.
    pytest.fail(failure, pytrace=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_service: PostgresService
) -> AsyncIterator[str]:
    """An empty database of each kind, its URL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"
        return
    server = await _postgres(postgres_service)
    async with server.fresh_database() as url:
        yield url


@pytest.fixture
async def postgres_url(postgres_service: PostgresService) -> AsyncIterator[str]:
    """An empty PostgreSQL database, for the tests of what only PostgreSQL does."""
    server = await _postgres(postgres_service)
    async with server.fresh_database() as url:
        yield url


async def _migrated(url: str) -> AsyncIterator[SqlStore]:
    await asyncio.to_thread(migrations.upgrade, url)
    store = await SqlStore.connect(url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def migrated_store(database_url: str) -> AsyncIterator[SqlStore]:
    """A store on a migrated database of each kind."""
    async for store in _migrated(database_url):
        yield store


@pytest.fixture
async def postgres_store(postgres_url: str) -> AsyncIterator[SqlStore]:
    """A store on a migrated PostgreSQL database."""
    async for store in _migrated(postgres_url):
        yield store


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
    server = await _postgres(postgres_service)
    async with server.fresh_database() as url:
        yield url


@pytest.fixture
async def rig(
    tmp_path: Path, amqp_url: str, database_url: str, participant_database_url: str
) -> AsyncIterator[Rig]:
    """An orchestrator and the three test participants, running (tests/integration/runtime)."""
    from harness import Rig

    rig = await Rig.create(tmp_path, amqp_url, database_url, participant_database_url)
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        yield rig
    finally:
        await rig.close()
