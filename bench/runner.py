"""One measured run of one system: fresh services, start, warm up, drive the workload, read
the figures, stop."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from bench import procstat, services
from bench.system import System

POLL_SECONDS = 0.01
"""How often the harness asks a system which sagas are over (one query each time)."""


@dataclass(frozen=True)
class Workload:
    sagas: int
    concurrency: int
    fail: bool
    """The compensation variant: confirm fails for good, charge and reserve are undone."""
    warmup: int = 100

    @property
    def label(self) -> str:
        variant = "compensation" if self.fail else "success"
        return f"{variant}, N={self.sagas}, C={self.concurrency}"


@dataclass
class RunResult:
    system: str
    workload: str
    sagas_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_saga: dict[str, float]
    peak_rss_mb: dict[str, float]
    commits_per_saga: float
    messages_per_saga: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu_ms_per_saga.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_ms_per_saga_total": self.cpu_total}


class RunFailed(RuntimeError):
    """The system did not finish the workload in time (or lost sagas)."""


async def drive(
    system: System,
    db: asyncpg.Connection,
    prefix: str,
    count: int,
    concurrency: int,
    fail: bool,
    *,
    within: float,
) -> tuple[dict[str, float], dict[str, float]]:
    """Start ``count`` sagas, at most ``concurrency`` at once; their start and end times."""
    keys = [f"{prefix}-{index}" for index in range(count)]
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    pending: set[str] = set()
    following = 0
    deadline = time.monotonic() + within
    while len(ended) < count:
        room = min(concurrency - len(pending), count - following)
        if room > 0:
            batch = keys[following : following + room]
            following += room
            now = time.time()
            for key in batch:
                started[key] = now
            pending.update(batch)
            await system.begin([(key, fail) for key in batch])
        await asyncio.sleep(POLL_SECONDS)
        done = await system.finished(db, list(pending))
        for key, at in done.items():
            if key in pending:
                pending.discard(key)
                ended[key] = at
        if time.monotonic() > deadline:
            raise RunFailed(f"{system.name}: {len(ended)} of {count} sagas over after {within:g}s")
    return started, ended


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


async def measure(
    system: System, workload: Workload, endpoints: services.Endpoints, label: str
) -> RunResult:
    """Run ``workload`` on a freshly started ``system`` and return its figures."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as workdir:
        shared = await services.prepare(endpoints, label, workdir)
        try:
            # The broker's counter is read while the system starts (a rabbitmqctl call takes
            # a second or two); its messages are then counted over the warm-up and the
            # measured sagas alike, which are the same workload.
            messages_before, _ = await asyncio.gather(
                asyncio.to_thread(services.broker_messages_received), system.start(shared)
            )
            try:
                # Connect once the system is up: the seeded row replaces the run's database
                # while it starts.
                db = await asyncpg.connect(shared.postgres_dsn)
                try:
                    prefix = uuid.uuid4().hex[:8]
                    await drive(
                        system,
                        db,
                        f"warm-{prefix}",
                        workload.warmup,
                        workload.concurrency,
                        workload.fail,
                        within=120,
                    )
                    commits_before = await services.write_transactions(db)
                    roles = process_roles(system)
                    meter = procstat.CpuMeter()
                    meter.start(roles)
                    began = time.time()
                    started, ended = await drive(
                        system,
                        db,
                        prefix,
                        workload.sagas,
                        workload.concurrency,
                        workload.fail,
                        within=max(120.0, workload.sagas / 5),
                    )
                    cpu = meter.stop(process_roles(system))
                    commits = await services.write_transactions(db) - commits_before - 1
                    messages = await asyncio.to_thread(services.broker_messages_received)
                    finished_at = max(ended.values())
                    rss = {
                        role: max(procstat.peak_rss_mb(pid) for pid in pids)
                        for role, pids in system.processes().roles.items()
                    }
                finally:
                    await db.close()
            finally:
                await system.stop()
        finally:
            await services.release(endpoints, shared)
    latencies = [(ended[key] - started[key]) * 1000 for key in ended]
    return RunResult(
        system=system.name,
        workload=workload.label,
        sagas_per_second=workload.sagas / max(finished_at - began, 1e-9),
        p50_ms=statistics.median(latencies),
        p99_ms=_percentile(latencies, 99),
        cpu_ms_per_saga={role: seconds * 1000 / workload.sagas for role, seconds in cpu.items()},
        peak_rss_mb=rss,
        commits_per_saga=commits / workload.sagas,
        messages_per_saga=(messages - messages_before) / (workload.warmup + workload.sagas),
        seconds=finished_at - began,
    )


def process_roles(system: System) -> dict[str, list[int]]:
    roles = dict(system.processes().roles)
    roles["postgresql"] = procstat.named("postgres")
    roles["rabbitmq"] = procstat.named("beam.smp")
    return roles
