"""A rig for runtime tests: an orchestrator and participants in this process, on a real
broker (a fresh vhost) and real databases, plus helpers to start sagas and wait for them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from testapp import alpha, beta, effects, gamma, trio_yaml

from orchestrator import migrations
from orchestrator.client import StartClient
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.service import OrchestratorService
from orchestrator.settings import Settings
from orchestrator.store import SagaRecord
from orchestrator.stores import SqlStore
from orchestrator.stores.engine import create_engine
from orchestrator.transports.amqp import AmqpTransport
from participants import Participant
from participants.runtime import ParticipantService, ParticipantSettings

PARTICIPANTS: dict[str, Participant] = {"alpha": alpha, "beta": beta, "gamma": gamma}


@dataclass
class Rig:
    """Everything one runtime test runs on; :meth:`close` stops what it started."""

    amqp_url: str
    database_url: str
    participant_database_url: str
    definitions_dir: Path
    orchestrators: list[OrchestratorService] = field(default_factory=list)
    participants: dict[str, ParticipantService] = field(default_factory=dict)
    _client_transport: AmqpTransport | None = None
    _client: StartClient | None = None
    _reader: SqlStore | None = None

    @classmethod
    async def create(
        cls,
        tmp_path: Path,
        amqp_url: str,
        database_url: str,
        participant_database_url: str,
        *,
        definition: str | None = None,
    ) -> Rig:
        """Write the test definitions and migrate the orchestrator's database."""
        definitions_dir = tmp_path / "sagas"
        definitions_dir.mkdir(exist_ok=True)
        (definitions_dir / "trio.yaml").write_text(definition or trio_yaml())
        await asyncio.to_thread(migrations.upgrade, database_url)
        return cls(amqp_url, database_url, participant_database_url, definitions_dir)

    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            amqp_url=self.amqp_url,
            definitions_dir=self.definitions_dir,
        )

    async def start_orchestrator(self) -> OrchestratorService:
        """One more orchestrator on the shared database."""
        settings = self.settings()
        registry = DefinitionRegistry.load_dir(settings.definitions_dir)
        store = await SqlStore.connect(settings.database_url)
        transport = AmqpTransport(settings.amqp_url, name="test-orchestrator")
        await transport.connect()
        service = OrchestratorService(settings, registry, store, transport)
        await service.start()
        self.orchestrators.append(service)
        return service

    async def start_participants(self, names: Iterable[str] = PARTICIPANTS) -> None:
        """Start each named test participant (alpha, beta, gamma)."""
        for name in names:
            settings = ParticipantSettings(
                amqp_url=self.amqp_url, database_url=self.participant_database_url
            )
            transport = AmqpTransport(self.amqp_url, name=f"test-{name}")
            await transport.connect()
            service = ParticipantService(
                PARTICIPANTS[name], settings, create_engine(settings.database_url), transport
            )
            await service.start()
            self.participants[name] = service

    async def stop_participant(self, name: str) -> None:
        """Stop one participant (gracefully)."""
        await self.participants.pop(name).stop()

    async def client(self) -> StartClient:
        if self._client is None:
            self._client_transport = AmqpTransport(self.amqp_url, name="test-client")
            await self._client_transport.connect()
            self._client = StartClient(self._client_transport)
        return self._client

    async def reset_client(self) -> None:
        """Drop the start client's connection (after the broker went away); the next start
        connects again."""
        transport, self._client_transport, self._client = self._client_transport, None, None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()

    async def start(
        self,
        inputs: Sequence[dict[str, Any]],
        *,
        keys: Sequence[str | None] | None = None,
        saga: str = "trio",
    ) -> list[str]:
        """Start one saga (trio unless ``saga`` names another) per input; their ids."""
        client = await self.client()
        pairs = list(zip(inputs, keys or [None] * len(inputs), strict=True))
        replies = await client.start_many(saga, pairs, wait_seconds=60)
        ids = []
        for reply in replies:
            assert reply.error is None, reply.error
            assert reply.saga_id is not None
            ids.append(reply.saga_id)
        return ids

    async def reader(self) -> SqlStore:
        if self._reader is None:
            self._reader = await SqlStore.connect(self.database_url)
        return self._reader

    async def wait_terminal(
        self, saga_ids: Sequence[str], *, within: float = 60.0
    ) -> dict[str, SagaRecord]:
        """Poll until every saga is terminal; fail with the stragglers' states if not."""
        store = await self.reader()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        pending = set(saga_ids)
        done: dict[str, SagaRecord] = {}
        while pending:
            for saga_id in list(pending):
                record = await store.get(saga_id)
                if record is not None and record.state.status.terminal:
                    done[saga_id] = record
                    pending.discard(saga_id)
            if not pending:
                break
            if loop.time() > deadline:
                states = {}
                for saga_id in list(pending)[:5]:
                    record = await store.get(saga_id)
                    states[saga_id] = None if record is None else record.state.status.value
                raise AssertionError(
                    f"{len(pending)} sagas not terminal after {within}s, e.g. {states}"
                )
            await asyncio.sleep(0.05)
        return done

    async def effects(self) -> list[sa.Row[Any]]:
        """Every committed participant effect, in commit order."""
        engine = create_engine(self.participant_database_url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(sa.select(effects).order_by(effects.c.id))
                return list(result)
        finally:
            await engine.dispose()

    async def close(self) -> None:
        """Stop everything this rig started."""
        for service in self.participants.values():
            await service.stop()
        self.participants.clear()
        for orchestrator in self.orchestrators:
            await orchestrator.stop()
        self.orchestrators.clear()
        if self._client_transport is not None:
            await self._client_transport.close()
        if self._reader is not None:
            await self._reader.close()
