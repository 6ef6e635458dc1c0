"""The standard saga as a DBOS Transact workflow, in one process
(``python -m bench.peers.dbos_worker SYSTEM_DB_URL EFFECTS_DSN``).

Each step is a DBOS step making one durable write with asyncpg; a saga whose confirm
fails for good compensates charge then reserve, one write each. Sagas to start come as
lines ``KEY 0|1`` on stdin (1: confirm fails), each started with the key as its workflow
id, without waiting for it to end."""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from dbos import DBOS, DBOSConfig, SetWorkflowID

READY = "dbos ready"
_INSERT = (
    "INSERT INTO bench_effects (saga_key, step, kind) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
)
_pool: asyncpg.Pool | None = None


class Rejected(Exception):
    """Confirm failed for good."""


@DBOS.step()  # type: ignore[untyped-decorator,unused-ignore]
async def write(key: str, step: str, kind: str) -> None:
    assert _pool is not None
    await _pool.execute(_INSERT, key, step, kind)


@DBOS.step()  # type: ignore[untyped-decorator,unused-ignore]
async def confirm(key: str, fail: bool) -> None:
    if fail:
        raise Rejected(f"order {key} cannot be confirmed")
    assert _pool is not None
    await _pool.execute(_INSERT, key, "confirm", "action")


@DBOS.workflow()  # type: ignore[untyped-decorator,unused-ignore]
async def order(key: str, fail: bool) -> str:
    await write(key, "reserve", "action")
    await write(key, "charge", "action")
    try:
        await confirm(key, fail)
    except Rejected:
        await write(key, "charge", "compensation")
        await write(key, "reserve", "compensation")
        return "compensated"
    return "completed"


async def main(system_db_url: str, effects_dsn: str) -> None:
    global _pool
    _pool = await asyncpg.create_pool(effects_dsn, min_size=4, max_size=10)
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": system_db_url,
        "sys_db_pool_size": 20,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(READY, flush=True)
    running: set[asyncio.Future[str]] = set()
    while line := await reader.readline():
        key, fail = line.decode().split()
        with SetWorkflowID(key):
            handle = await DBOS.start_workflow_async(order, key, fail == "1")
        task = asyncio.ensure_future(handle.get_result())
        running.add(task)
        task.add_done_callback(running.discard)
    DBOS.destroy()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
