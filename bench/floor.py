"""The floor: the least this broker and this database can do for the standard saga with the
same durability, written by hand with no framework.

Orchestrator (``python -m bench.floor orchestrator``): a start message inserts the saga row
and sends the first command; each reply is one conditional UPDATE of the saga row (which
also drops a duplicate reply) and sends the next command. Participant (``python -m
bench.floor participant``): each command is one INSERT of its effect (ON CONFLICT DO
NOTHING: a redelivery writes nothing twice), then the reply. Persistent messages on quorum
queues, publisher confirms, manual acks after the commit and the confirmed publish, asyncpg.
What it leaves out that a product needs: timeouts and retries, an outbox (a crash between
commit and publish is recovered only because the unacked message comes back), definitions,
history, dead letters, operations, telemetry.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bench import proc
from bench.system import EFFECTS_DDL, Processes, Services

START, COMMANDS, REPLIES = "floor.start", "floor.commands", "floor.replies"
PREFETCH = 100
READY = "floor ready"

SAGAS_DDL = """
CREATE TABLE IF NOT EXISTS floor_sagas (
    key text PRIMARY KEY,
    fail boolean NOT NULL,
    position text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

# position -> (position after a success, command to send: (step, kind) or None when over)
_ON_SUCCESS: dict[str, tuple[str, tuple[str, str] | None]] = {
    "reserve": ("charge", ("charge", "action")),
    "charge": ("confirm", ("confirm", "action")),
    "confirm": ("completed", None),
    "undo charge": ("undo reserve", ("reserve", "compensation")),
    "undo reserve": ("compensated", None),
}


async def _channel(connection: aio_pika.abc.AbstractConnection) -> AbstractChannel:
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=PREFETCH)
    for name in (START, COMMANDS, REPLIES):
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    return channel


async def _send(channel: AbstractChannel, queue: str, body: dict[str, object]) -> None:
    message = aio_pika.Message(
        json.dumps(body).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
    )
    await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)


async def orchestrator(amqp_url: str, dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=10)
    await pool.execute(SAGAS_DDL)
    connection = await aio_pika.connect(amqp_url)
    channel = await _channel(connection)

    async def command(key: str, fail: bool, step: str, kind: str) -> None:
        await _send(channel, COMMANDS, {"key": key, "step": step, "kind": kind, "fail": fail})

    async def on_start(message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        await pool.execute(
            "INSERT INTO floor_sagas (key, fail, position) VALUES ($1, $2, 'reserve')"
            " ON CONFLICT DO NOTHING",
            body["key"],
            body["fail"],
        )
        await command(body["key"], body["fail"], "reserve", "action")
        await message.ack()

    async def on_reply(message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        position = body["step"] if body["kind"] == "action" else f"undo {body['step']}"
        if body["ok"]:
            following, send = _ON_SUCCESS[position]
        else:  # confirm failed for good: undo charge first
            following, send = "undo charge", ("charge", "compensation")
        row = await pool.fetchrow(
            "UPDATE floor_sagas SET position = $2, updated_at = clock_timestamp()"
            " WHERE key = $1 AND position = $3 RETURNING fail",
            body["key"],
            following,
            position,
        )
        if row is not None and send is not None:
            await command(body["key"], row["fail"], *send)
        await message.ack()

    await (await channel.get_queue(START)).consume(on_start)
    await (await channel.get_queue(REPLIES)).consume(on_reply)
    print(READY, flush=True)
    await _until_terminated()
    await connection.close()
    await pool.close()


async def participant(amqp_url: str, dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=10)
    await pool.execute(EFFECTS_DDL)
    connection = await aio_pika.connect(amqp_url)
    channel = await _channel(connection)

    async def on_command(message: AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        ok = not (body["step"] == "confirm" and body["fail"])
        if ok:
            await pool.execute(
                "INSERT INTO bench_effects (saga_key, step, kind) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                body["key"],
                body["step"],
                body["kind"],
            )
        reply = {"key": body["key"], "step": body["step"], "kind": body["kind"], "ok": ok}
        await _send(channel, REPLIES, reply)
        await message.ack()

    await (await channel.get_queue(COMMANDS)).consume(on_command)
    print(READY, flush=True)
    await _until_terminated()
    await connection.close()
    await pool.close()


async def _until_terminated() -> None:
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()


_FINISHED_SQL = """
SELECT key, extract(epoch FROM updated_at)::float8 FROM floor_sagas
WHERE key = ANY($1::text[]) AND position IN ('completed', 'compensated')
"""


class Floor:
    """The floor as a :class:`~bench.system.System`."""

    name = "floor (hand-written)"
    caveat = "no timeouts, retries, outbox, history or operations: the least, not a product"

    def __init__(self) -> None:
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def start(self, services: Services) -> None:
        env = proc.environ({})
        log = Path(services.workdir) / "floor.log"
        for role in ("participant", "orchestrator"):
            self._processes[role] = await proc.start(
                ["-m", "bench.floor", role, services.amqp_url, services.postgres_dsn],
                env=env,
                log=log,
                ready=READY,
            )
        self._connection = await aio_pika.connect(services.amqp_url)
        self._channel = await self._connection.channel(publisher_confirms=True)

    async def begin(self, sagas: Sequence[tuple[str, bool]]) -> None:
        assert self._channel is not None
        channel = self._channel
        await asyncio.gather(
            *(_send(channel, START, {"key": key, "fail": fail}) for key, fail in sagas)
        )

    async def finished(self, db: asyncpg.Connection, keys: Sequence[str]) -> Mapping[str, float]:
        rows = await db.fetch(_FINISHED_SQL, list(keys))
        return {row[0]: row[1] for row in rows}

    def processes(self) -> Processes:
        return Processes(
            {
                "orchestrator": [self._processes["orchestrator"].pid],
                "participants": [self._processes["participant"].pid],
            }
        )

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        for process in self._processes.values():
            await asyncio.to_thread(proc.stop, process)
        self._processes.clear()


def main(argv: list[str]) -> None:
    role, amqp_url, dsn = argv
    asyncio.run(
        orchestrator(amqp_url, dsn) if role == "orchestrator" else participant(amqp_url, dsn)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
