"""Celery under the benchmark: a worker process (prefork, one child per core) and chains
sent from the harness."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench import proc, procstat
from bench.system import Processes, Services, create_effects_table

_FINISHED_SQL = """
SELECT saga_key, extract(epoch FROM max(at))::float8 FROM bench_effects
WHERE saga_key = ANY($1::text[])
  AND ((step = 'confirm' AND kind = 'action') OR (step = 'reserve' AND kind = 'compensation'))
GROUP BY saga_key
"""


class CeleryPeer:
    name = "Celery"
    caveat = (
        "no saga state: a chain lost between tasks (a crash, an unroutable message) is"
        " neither resumed nor compensated, no timeouts, and a task run twice writes twice"
        " unless it dedupes itself"
    )

    def __init__(self) -> None:
        self._worker: subprocess.Popen[bytes] | None = None
        self._app: Any = None
        self._connection: Any = None

    async def start(self, services: Services) -> None:
        await create_effects_table(services)
        settings = {"BENCH_AMQP_URL": services.amqp_url, "BENCH_EFFECTS_DSN": services.postgres_dsn}
        concurrency = str(os.cpu_count() or 2)
        self._worker = await proc.start(
            [
                "-m",
                "celery",
                "-A",
                "bench.peers.celery_tasks",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                concurrency,
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=proc.environ(settings),
            log=Path(services.workdir) / "celery.log",
            ready=" ready.",
        )
        os.environ.update(settings)  # the producer below reads the same broker
        from bench.peers import celery_tasks

        celery_tasks.app.conf.broker_url = services.amqp_url
        self._app = celery_tasks
        self._connection = celery_tasks.app.connection_for_write()
        self._connection.ensure_connection()

    async def begin(self, sagas: Sequence[tuple[str, bool]]) -> None:
        tasks = self._app

        def send() -> None:
            with tasks.app.producer_or_acquire() as producer:
                for key, fail in sagas:
                    tasks.saga(key, fail).apply_async(producer=producer)

        await asyncio.to_thread(send)

    async def finished(self, db: asyncpg.Connection, keys: Sequence[str]) -> Mapping[str, float]:
        rows = await db.fetch(_FINISHED_SQL, list(keys))
        return {row[0]: row[1] for row in rows}

    def processes(self) -> Processes:
        if self._worker is None:
            return Processes({})
        return Processes({"worker": sorted(procstat.descendants([self._worker.pid]))})

    async def stop(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None
        if self._worker is not None:
            await asyncio.to_thread(proc.stop, self._worker)
            self._worker = None
