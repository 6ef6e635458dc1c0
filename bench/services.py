"""The shared services each run gets a fresh, empty share of: a RabbitMQ vhost and a
PostgreSQL database, plus the broker's and the database's own counters."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aio_pika.exceptions
import asyncpg

from bench.system import Services


class ServiceError(RuntimeError):
    """A shared service is missing or refused what the harness asked of it."""


@dataclass(frozen=True)
class Endpoints:
    """Where RabbitMQ and PostgreSQL are (``--amqp``, ``--postgres``)."""

    amqp_base: str = "amqp://guest:guest@127.0.0.1:5672"
    postgres_base: str = "postgresql://postgres@127.0.0.1:5432"

    @property
    def admin_dsn(self) -> str:
        return f"{self.postgres_base}/postgres"


RUN_LOCK = Path("/tmp/saga-bench.lock")
"""One path for every shell (not the temporary folder, which ``TMPDIR`` may move)."""


@contextlib.contextmanager
def one_run_at_a_time(lock: Path = RUN_LOCK) -> Iterator[None]:
    """Hold the machine's benchmark lock for the whole run; :class:`ServiceError` if another
    run holds it.

    Two runs at once would share the broker's vhosts and the database's names, and each
    would measure the other's load. The lock is the kernel's, so a run that dies releases
    it; the file only says who holds it."""
    try:
        handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 (closed by the with below)
    except OSError as exc:
        raise ServiceError(f"cannot open the benchmark lock file {lock}: {exc}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ServiceError(
                f"another benchmark is running on this machine ({holder}): runs share the"
                f" broker and the database and measure the whole machine; wait for it to end"
                f" (lock file {lock})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}, since {datetime.now(UTC):%H:%M:%S} UTC")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def _rabbitmqctl(*args: str, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            input=stdin,
        )
    except FileNotFoundError as exc:
        raise ServiceError(
            "rabbitmqctl is not on PATH: the harness needs the local broker"
        ) from exc
    if done.returncode != 0:
        raise ServiceError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


_DROPPED: set[str] = set()
"""Vhosts this process deleted itself: no need to ask the broker whether they exist."""


async def fresh_vhost(name: str) -> None:
    """Delete the vhost if it exists, create it empty, let guest use it.

    Every ``rabbitmqctl`` call takes a second or two (the CLI starts an Erlang node), so a
    run makes as few as it can: the vhost and its permissions in one definitions import,
    and the question whether it exists (left by a run that was killed) asked only the
    first time this process uses the name."""
    await asyncio.to_thread(_fresh_vhost, name)


def _fresh_vhost(name: str) -> None:
    if name not in _DROPPED and name in _rabbitmqctl("list_vhosts", "name").split():
        _rabbitmqctl("delete_vhost", name)
    _DROPPED.discard(name)
    definitions = {
        "vhosts": [{"name": name}],
        "permissions": [
            {"user": "guest", "vhost": name, "configure": ".*", "write": ".*", "read": ".*"}
        ],
    }
    # From standard input: a file would have to be readable by the broker's own user.
    _rabbitmqctl("import_definitions", stdin=json.dumps(definitions))


async def drop_vhost(name: str) -> None:
    await asyncio.to_thread(_rabbitmqctl, "delete_vhost", name)
    _DROPPED.add(name)


async def fresh_database(endpoints: Endpoints, name: str, template: str | None = None) -> None:
    """Drop the database if it exists and create it empty (or as a copy of ``template``)."""
    connection = await asyncpg.connect(endpoints.admin_dsn)
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await connection.close()


async def drop_database(endpoints: Endpoints, name: str) -> None:
    connection = await asyncpg.connect(endpoints.admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _usable(amqp_url: str, within: float = 10.0) -> None:
    """Return once guest can connect to the vhost (the CLI calls its import asynchronous)."""
    deadline = time.monotonic() + within
    while True:
        try:
            connection = await aio_pika.connect(amqp_url)
        except (OSError, aio_pika.exceptions.AMQPError) as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"the new vhost is not usable after {within:g}s: {exc}") from exc
            await asyncio.sleep(0.05)
        else:
            await connection.close()
            return


async def prepare(endpoints: Endpoints, label: str, workdir: str) -> Services:
    """A fresh vhost and database named ``bench_<label>``."""
    name = "bench_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    await asyncio.gather(fresh_vhost(name), fresh_database(endpoints, name))
    await _usable(f"{endpoints.amqp_base}/{name}")
    return Services(
        amqp_url=f"{endpoints.amqp_base}/{name}",
        database=name,
        postgres_dsn=f"{endpoints.postgres_base}/{name}",
        workdir=workdir,
    )


async def release(endpoints: Endpoints, services: Services) -> None:
    await asyncio.gather(drop_vhost(services.database), drop_database(endpoints, services.database))


def broker_messages_received() -> int:
    """Messages the broker has received from publishers since it started (all vhosts)."""
    text = _rabbitmqctl("eval", "rabbit_global_counters:overview().")
    match = re.search(r"messages_received_total => (\d+)", text)
    if match is None:
        raise ServiceError(f"unexpected global counters from the broker: {text[:200]}")
    return int(match.group(1))


async def write_transactions(db: asyncpg.Connection) -> int:
    """Transactions that have written anything, cluster-wide, so far: the next transaction id
    (read-only transactions take none, so the harness's polling does not count; this read
    takes one)."""
    return int(await db.fetchval("SELECT pg_current_xact_id()::text::bigint"))


async def server_versions(endpoints: Endpoints) -> dict[str, str]:
    connection = await asyncpg.connect(endpoints.admin_dsn)
    try:
        postgres = str(await connection.fetchval("SHOW server_version")).split()[0]
    finally:
        await connection.close()
    status = await asyncio.to_thread(_rabbitmqctl, "version")
    return {"postgresql": postgres, "rabbitmq": status.strip()}
