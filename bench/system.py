"""What the harness needs of each system it measures, and what they share.

The workload: ``n`` three-step sagas (reserve -> charge -> confirm), up to ``concurrency``
in flight. Every step is a handler making one durable write of its own to PostgreSQL: a row
in ``bench_effects`` keyed by (saga key, step, kind). In the compensation variant confirm
fails for good and charge then reserve are compensated, each compensation a row of kind
``compensation``. A saga's start time is taken by the harness when it hands the saga to the
system; its end time is the system's own durable record that the saga is over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

STEPS = ("reserve", "charge", "confirm")
"""The standard saga; the compensation variant compensates charge, then reserve."""

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS bench_effects (
    saga_key text NOT NULL,
    step text NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (saga_key, step, kind)
)
"""
"""The participants' durable writes, in every system's database."""


@dataclass(frozen=True)
class Services:
    """Where the shared services are, and the names a system may use for itself."""

    amqp_url: str
    """A fresh, empty vhost for this system's run (``amqp://guest:guest@host:5672/vhost``)."""
    database: str
    """A fresh PostgreSQL database for this system's run (created empty)."""
    postgres_dsn: str
    """asyncpg DSN of ``database``."""
    workdir: str
    """A fresh folder for files (logs, SQLite databases)."""

    def sqlalchemy_url(self) -> str:
        return self.postgres_dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def create_effects_table(services: Services) -> None:
    """Create ``bench_effects`` in the run's database (for systems whose own set-up does
    not)."""
    db = await asyncpg.connect(services.postgres_dsn)
    try:
        await db.execute(EFFECTS_DDL)
    finally:
        await db.close()


@dataclass
class Processes:
    """The system's own processes by role, for CPU and memory figures."""

    roles: dict[str, list[int]] = field(default_factory=dict)


class System(Protocol):
    """One system under test; each run is ``start``, the driven sagas, ``stop``."""

    name: str
    """Row label in the table."""
    caveat: str
    """What it does not guarantee that this product does (empty when nothing)."""

    async def start(self, services: Services) -> None:
        """Prepare its tables and start its processes; return once they take work."""
        ...

    async def begin(self, sagas: Sequence[tuple[str, bool]]) -> None:
        """Start these sagas: (key, fail); ``fail`` means confirm fails for good."""
        ...

    async def finished(self, db: asyncpg.Connection, keys: Sequence[str]) -> Mapping[str, float]:
        """Of these keys, those whose saga is over: key -> end time (Unix seconds), read
        from the system's own durable record. One query: it runs every few milliseconds."""
        ...

    def processes(self) -> Processes:
        """Its processes now (pids by role: ``orchestrator``, ``participants``, ...)."""
        ...

    async def stop(self) -> None:
        """Stop every process it started."""
        ...
