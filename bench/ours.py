"""This product under the benchmark: the orchestrator and one participant as processes,
started as a user runs them (``saga db upgrade``, ``saga orchestrator run``, ``saga
participant run bench.ours_app:app``), sagas started over the broker as start requests."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import asyncpg

from bench import proc, seeded
from bench.ours_app import SAGA_YAML
from bench.services import Endpoints
from bench.system import Processes, Services
from contracts import StartRequest, encode
from orchestrator.engine import new_id
from orchestrator.topology import START_QUEUE
from orchestrator.transport import PublishFailed, publish_wire
from orchestrator.transports.amqp import AmqpTransport

_FINISHED_SQL = """
SELECT idempotency_key, extract(epoch FROM updated_at)::float8
FROM saga_instances
WHERE name = 'bench_order' AND idempotency_key = ANY($1::text[])
  AND state IN ('completed', 'compensated', 'failed')
"""


class Ours:
    """The saga orchestrator with its state on PostgreSQL or (``store="sqlite"``) SQLite."""

    caveat = ""

    def __init__(
        self,
        store: str = "postgresql",
        extra_env: Mapping[str, str] | None = None,
        *,
        orchestrators: int = 1,
        seeded: int = 0,
    ):
        """``orchestrators`` processes share the work; ``seeded`` finished sagas are in the
        database before the run (PostgreSQL only; see :mod:`bench.seeded`)."""
        self.store = store
        details = [store]
        if orchestrators > 1:
            details.append(f"{orchestrators} orchestrators")
        if seeded:
            details.append(f"{seeded:,} finished sagas in the table")
        if loop := (extra_env or {}).get("SAGA_EVENT_LOOP"):
            details.append(f"{loop} event loop")
        self.name = f"saga orchestrator ({', '.join(details)})"
        self._extra_env = dict(extra_env or {})
        self._count = orchestrators
        self._seeded = seeded
        self._orchestrators: list[subprocess.Popen[bytes]] = []
        self._participant: subprocess.Popen[bytes] | None = None
        self._client: AmqpTransport | None = None
        self._sqlite: Path | None = None

    async def start(self, services: Services) -> None:
        workdir = Path(services.workdir)
        definitions = workdir / "sagas"
        definitions.mkdir(parents=True, exist_ok=True)
        (definitions / "bench_order.yaml").write_text(SAGA_YAML)
        if self.store == "sqlite":
            self._sqlite = workdir / "orchestrator.db"
            database_url = f"sqlite+aiosqlite:///{self._sqlite}"
        else:
            database_url = services.sqlalchemy_url()
        env = proc.environ(
            {
                "SAGA_AMQP_URL": services.amqp_url,
                "SAGA_DATABASE_URL": database_url,
                "SAGA_DEFINITIONS": str(definitions),
                "SAGA_PARTICIPANT_DATABASE_URL": services.sqlalchemy_url(),
                **self._extra_env,
            }
        )
        log = workdir / "ours.log"
        if self._seeded:
            endpoints = Endpoints(postgres_base=services.postgres_dsn.rsplit("/", 1)[0])
            template = await seeded.ensure_template(endpoints, self._seeded, SAGA_YAML, workdir)
            await seeded.copy_into(endpoints, template, services.database)
        # The participant starts while the orchestrator's schema is migrated (its tables are
        # its own), and the orchestrators once it is; a failure stops what did start.
        try:
            await asyncio.gather(
                self._start_participant(env, log), self._start_orchestrators(env, log)
            )
        except BaseException:
            await self.stop()
            raise
        self._client = AmqpTransport(services.amqp_url, name="bench-client")
        await self._client.connect()

    async def _start_participant(self, env: dict[str, str], log: Path) -> None:
        self._participant = await proc.start(
            ["-m", "orchestrator", "participant", "run", "bench.ours_app:app"],
            env=env,
            log=log,
            ready="participant bench running",
        )

    async def _start_orchestrators(self, env: dict[str, str], log: Path) -> None:
        await asyncio.to_thread(proc.run, ["-m", "orchestrator", "db", "upgrade"], env=env, log=log)
        for _ in range(self._count):
            orchestrator = await proc.start(
                ["-m", "orchestrator", "orchestrator", "run"],
                env=env,
                log=log,
                ready="orchestrator running:",
            )
            self._orchestrators.append(orchestrator)

    async def begin(self, sagas: Sequence[tuple[str, bool]]) -> None:
        assert self._client is not None
        client = self._client

        async def one(key: str, fail: bool) -> None:
            request = StartRequest(
                message_id=new_id(),
                saga_name="bench_order",
                input={"key": key, "fail": fail},
                idempotency_key=key,
            )
            if not await publish_wire(client, encode(request), routing_key=START_QUEUE):
                raise PublishFailed(f"start request for {key} not confirmed")

        await asyncio.gather(*(one(key, fail) for key, fail in sagas))

    async def finished(self, db: asyncpg.Connection, keys: Sequence[str]) -> Mapping[str, float]:
        if self._sqlite is not None:
            return await asyncio.to_thread(self._finished_sqlite, list(keys))
        rows = await db.fetch(_FINISHED_SQL, list(keys))
        return {row[0]: row[1] for row in rows}

    def _finished_sqlite(self, keys: list[str]) -> dict[str, float]:
        assert self._sqlite is not None
        marks = ",".join("?" * len(keys))
        with sqlite3.connect(f"file:{self._sqlite}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute(
                "SELECT idempotency_key, updated_at FROM saga_instances"
                f" WHERE name = 'bench_order' AND idempotency_key IN ({marks})"
                " AND state IN ('completed', 'compensated', 'failed')",
                keys,
            ).fetchall()
        # Naive UTC text (see orchestrator.stores.tables.UtcDateTime).
        return {key: datetime.fromisoformat(f"{at}+00:00").timestamp() for key, at in rows}

    def processes(self) -> Processes:
        roles: dict[str, list[int]] = {}
        if self._orchestrators:
            roles["orchestrator"] = [process.pid for process in self._orchestrators]
        if self._participant is not None:
            roles["participants"] = [self._participant.pid]
        return Processes(roles)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        for process in (*self._orchestrators, self._participant):
            if process is not None:
                await asyncio.to_thread(proc.stop, process)
        self._orchestrators, self._participant = [], None
