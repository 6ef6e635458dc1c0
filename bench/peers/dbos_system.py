"""DBOS Transact under the benchmark: one process runs the workflow and its steps."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg

from bench import proc
from bench.peers.dbos_worker import READY
from bench.system import Processes, Services, create_effects_table

_FINISHED_SQL = """
SELECT workflow_uuid, updated_at / 1000.0 FROM dbos.workflow_status
WHERE workflow_uuid = ANY($1::text[]) AND status IN ('SUCCESS', 'ERROR')
"""


class DbosPeer:
    name = "DBOS Transact"
    caveat = (
        "steps run inside the workflow's process: no separate participant services and no"
        " broker between them (a step's service cannot fail or scale apart from it)"
    )

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, services: Services) -> None:
        await create_effects_table(services)
        self._process = await proc.start(
            ["-m", "bench.peers.dbos_worker", services.postgres_dsn, services.postgres_dsn],
            env=proc.environ({}),
            log=Path(services.workdir) / "dbos.log",
            ready=READY,
            stdin=True,
        )

    async def begin(self, sagas: Sequence[tuple[str, bool]]) -> None:
        assert self._process is not None
        assert self._process.stdin is not None
        lines = "".join(f"{key} {int(fail)}\n" for key, fail in sagas).encode()
        self._process.stdin.write(lines)
        self._process.stdin.flush()

    async def finished(self, db: asyncpg.Connection, keys: Sequence[str]) -> Mapping[str, float]:
        rows = await db.fetch(_FINISHED_SQL, list(keys))
        return {row[0]: float(row[1]) for row in rows}

    def processes(self) -> Processes:
        return Processes({"app": [self._process.pid]} if self._process else {})

    async def stop(self) -> None:
        if self._process is not None:
            await asyncio.to_thread(proc.stop, self._process)
            self._process = None
