"""The shared services each run gets a fresh, empty share of: a RabbitMQ vhost and a
PostgreSQL database, plus the broker's and the database's own counters."""

from __future__ import annotations

import asyncio
import re
import subprocess
from dataclasses import dataclass

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


def _rabbitmqctl(*args: str) -> str:
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError as exc:
        raise ServiceError(
            "rabbitmqctl is not on PATH: the harness needs the local broker"
        ) from exc
    if done.returncode != 0:
        raise ServiceError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


async def fresh_vhost(name: str) -> None:
    """Delete the vhost if it exists, create it empty, let guest use it."""
    await asyncio.to_thread(_fresh_vhost, name)


def _fresh_vhost(name: str) -> None:
    if name in _rabbitmqctl("list_vhosts", "name").split():
        _rabbitmqctl("delete_vhost", name)
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


async def drop_vhost(name: str) -> None:
    await asyncio.to_thread(_rabbitmqctl, "delete_vhost", name)


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


async def prepare(endpoints: Endpoints, label: str, workdir: str) -> Services:
    """A fresh vhost and database named ``bench_<label>``."""
    name = "bench_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    await asyncio.gather(fresh_vhost(name), fresh_database(endpoints, name))
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
