"""``python -m bench``: the standard saga workload on each system, side by side, in one run.

Every (workload, system) pair runs ``--runs`` times, interleaved (run 1 of every system,
then run 2, ...) so that a slow minute of the machine hurts all of them alike. Each run gets
a fresh vhost and database and freshly started processes, warms up, then is measured. The
table shows medians (throughput also min-max) and ratios to the floor of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import services
from bench.floor import Floor
from bench.ours import Ours
from bench.runner import RunFailed, RunResult, Workload, measure
from bench.system import System

SEEDED_SAGAS = 1_000_000
"""Finished sagas in the table for ``ours-seeded`` (``--seeded``)."""

SYSTEMS: dict[str, Callable[[], System]] = {
    "floor": Floor,
    "ours": Ours,
    "ours-sqlite": lambda: Ours(store="sqlite"),
    "ours-2": lambda: Ours(orchestrators=2),
    "ours-asyncio": lambda: Ours(extra_env={"SAGA_EVENT_LOOP": "asyncio"}),
    "ours-seeded": lambda: Ours(seeded=SEEDED_SAGAS),
}


def _peers() -> None:
    """Add the peers whose packages are installed (the optional ``bench`` extra)."""
    try:
        from bench.peers.dbos_system import DbosPeer

        SYSTEMS["dbos"] = DbosPeer
    except ImportError:
        pass
    try:
        from bench.peers.celery_system import CeleryPeer

        SYSTEMS["celery"] = CeleryPeer
    except ImportError:
        pass


DEFAULT_SYSTEMS = "floor,ours,ours-sqlite,dbos,celery"
SUCCESS_ONLY_BY_DEFAULT = frozenset({"ours-sqlite"})
"""Run in the success variant only unless named in ``--systems``: the SQLite row is the
second row of the table, and its compensation runs would take a quarter of the time."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the standard saga workload on this product, the floor and peers.",
    )
    parser.add_argument("--sagas", type=int, default=2000, help="sagas per run (default 2000)")
    parser.add_argument(
        "--concurrency",
        default="100,10",
        help="sagas in flight, comma-separated (default 100,10; C=10 runs success only)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each pair (default 3)")
    parser.add_argument(
        "--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated (default {DEFAULT_SYSTEMS})"
    )
    parser.add_argument(
        "--variants",
        default="success,compensation",
        help="success and/or compensation (default both, at the first concurrency)",
    )
    parser.add_argument(
        "--seeded",
        type=int,
        default=SEEDED_SAGAS,
        help=f"finished sagas already in the table for ours-seeded (default {SEEDED_SAGAS:,})",
    )
    parser.add_argument("--out", default="bench/results/latest.json", help="JSON results file")
    parser.add_argument("--amqp", default=services.Endpoints.amqp_base, help="broker base URL")
    parser.add_argument(
        "--postgres", default=services.Endpoints.postgres_base, help="PostgreSQL base URL"
    )
    return parser


@dataclass(frozen=True)
class Plan:
    workloads: list[Workload]
    systems: list[str]
    runs: int
    success_only: frozenset[str] = frozenset()

    def systems_for(self, workload: Workload) -> list[str]:
        """The systems that run ``workload``."""
        if not workload.fail:
            return self.systems
        return [name for name in self.systems if name not in self.success_only]


def plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Plan:
    """The matrix the arguments ask for; a usage error names the bad argument."""
    _peers()
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown:
        missing = {"dbos", "celery"} & set(unknown)
        hint = " (install the bench extra: pip install -e '.[bench]')" if missing else ""
        parser.error(f"--systems: unknown {', '.join(unknown)}; known: {', '.join(SYSTEMS)}{hint}")
    try:
        levels = [int(value) for value in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency: {args.concurrency!r} is not a list of whole numbers")
    variants = [value.strip() for value in args.variants.split(",") if value.strip()]
    bad = [value for value in variants if value not in ("success", "compensation")]
    if bad or not variants:
        parser.error(f"--variants: {', '.join(bad) or 'none given'}; use success, compensation")
    if args.sagas < 1 or args.runs < 1 or any(level < 1 for level in levels):
        parser.error("--sagas, --runs and --concurrency must be at least 1")
    if args.seeded < 1:
        parser.error("--seeded must be at least 1")
    SYSTEMS["ours-seeded"] = lambda: Ours(seeded=args.seeded)
    workloads = [
        Workload(args.sagas, levels[0], fail=variant == "compensation") for variant in variants
    ]
    if "success" in variants:
        workloads += [Workload(args.sagas, level, fail=False) for level in levels[1:]]
    success_only = SUCCESS_ONLY_BY_DEFAULT if args.systems == DEFAULT_SYSTEMS else frozenset()
    return Plan(workloads, systems, args.runs, success_only)


def machine(endpoints: services.Endpoints) -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        **asyncio.run(services.server_versions(endpoints)),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def summarise(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Medians per (workload, system), with ratios to the floor of the same workload."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.workload, result.system), []).append(result)
    rows: list[dict[str, Any]] = []
    for (workload, system), runs in groups.items():
        rates = [run.sagas_per_second for run in runs]
        roles = sorted({role for run in runs for role in run.cpu_ms_per_saga})
        rss_roles = sorted({role for run in runs for role in run.peak_rss_mb})
        rows.append(
            {
                "workload": workload,
                "system": system,
                "runs": len(runs),
                "sagas_per_second": statistics.median(rates),
                "sagas_per_second_min": min(rates),
                "sagas_per_second_max": max(rates),
                "p50_ms": statistics.median(run.p50_ms for run in runs),
                "p99_ms": statistics.median(run.p99_ms for run in runs),
                "cpu_ms_per_saga": statistics.median(run.cpu_total for run in runs),
                "cpu_ms_by_role": {
                    role: statistics.median(run.cpu_ms_per_saga.get(role, 0) for run in runs)
                    for role in roles
                },
                "peak_rss_mb": {
                    role: max(run.peak_rss_mb.get(role, 0) for run in runs) for role in rss_roles
                },
                "commits_per_saga": statistics.median(run.commits_per_saga for run in runs),
                "messages_per_saga": statistics.median(run.messages_per_saga for run in runs),
            }
        )
    floors = {row["workload"]: row for row in rows if row["system"] == Floor.name}
    for row in rows:
        floor = floors.get(row["workload"])
        if floor is not None:
            row["throughput_vs_floor"] = row["sagas_per_second"] / floor["sagas_per_second"]
            row["cpu_vs_floor"] = row["cpu_ms_per_saga"] / floor["cpu_ms_per_saga"]
            row["p99_vs_floor"] = row["p99_ms"] / floor["p99_ms"]
    return rows


def table(rows: Sequence[dict[str, Any]], info: dict[str, Any]) -> Table:
    title = (
        f"{info['cores']} cores, {info['ram_gib']} GiB, RabbitMQ {info['rabbitmq']}, "
        f"PostgreSQL {info['postgresql']}, Python {info['python']}"
    )
    out = Table(title=title, title_justify="left")
    for column in ("workload", "system", "sagas/s (min-max)", "× floor", "p50 ms", "p99 ms"):
        out.add_column(column, justify="left" if column in ("workload", "system") else "right")
    for column in ("CPU ms/saga", "× floor CPU", "orch/part/pg/mq ms", "RSS MB", "commits", "msgs"):
        out.add_column(column, justify="right")
    for row in rows:
        roles = row["cpu_ms_by_role"]
        own = [value for role, value in roles.items() if role not in ("postgresql", "rabbitmq")]
        split = "/".join(
            f"{value:.1f}" for value in (*own, roles.get("postgresql", 0), roles.get("rabbitmq", 0))
        )
        out.add_row(
            row["workload"],
            row["system"],
            f"{row['sagas_per_second']:.0f} ({row['sagas_per_second_min']:.0f}-"
            f"{row['sagas_per_second_max']:.0f})",
            f"{row.get('throughput_vs_floor', 0):.2f}",
            f"{row['p50_ms']:.0f}",
            f"{row['p99_ms']:.0f}",
            f"{row['cpu_ms_per_saga']:.1f}",
            f"{row.get('cpu_vs_floor', 0):.2f}",
            split,
            "/".join(f"{value:.0f}" for value in row["peak_rss_mb"].values()),
            f"{row['commits_per_saga']:.1f}",
            f"{row['messages_per_saga']:.1f}",
        )
    return out


async def run_plan(
    matrix: Plan, endpoints: services.Endpoints, console: Console
) -> list[RunResult]:
    results: list[RunResult] = []
    for workload in matrix.workloads:
        for run in range(1, matrix.runs + 1):
            for name in matrix.systems_for(workload):
                system = SYSTEMS[name]()
                began = time.monotonic()
                try:
                    result = await measure(system, workload, endpoints, name)
                except RunFailed as exc:
                    console.print(f"[red]{workload.label} run {run}: {exc}[/red]")
                    continue
                results.append(result)
                console.print(
                    f"{workload.label}  run {run}/{matrix.runs}  {system.name:28} "
                    f"{result.sagas_per_second:7.1f} sagas/s  p99 {result.p99_ms:6.0f} ms  "
                    f"CPU {result.cpu_total:5.1f} ms/saga  ({time.monotonic() - began:.0f} s)"
                )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    matrix = plan(args, parser)
    endpoints = services.Endpoints(amqp_base=args.amqp, postgres_base=args.postgres)
    console = Console(width=max(Console().width, 200))
    try:
        info = machine(endpoints)
    except (OSError, services.ServiceError) as exc:
        console.print(f"[red]cannot reach the services: {exc}[/red]")
        return 2
    try:
        with services.one_run_at_a_time():
            return _run_and_report(args, matrix, endpoints, console, info)
    except services.ServiceError as exc:  # the lock, or a service failing mid-run
        console.print(f"[red]{exc}[/red]")
        return 2


def _run_and_report(
    args: argparse.Namespace,
    matrix: Plan,
    endpoints: services.Endpoints,
    console: Console,
    info: dict[str, Any],
) -> int:
    pairs = sum(len(matrix.systems_for(workload)) for workload in matrix.workloads)
    console.print(
        f"{len(matrix.workloads)} workloads × {len(matrix.systems)} systems × {matrix.runs} runs"
        + (f" ({', '.join(matrix.success_only)}: success only)" if matrix.success_only else "")
    )
    began = time.monotonic()
    results = asyncio.run(run_plan(matrix, endpoints, console))
    rows = summarise(results)
    console.print(table(rows, info))
    for name in matrix.systems:
        caveat = SYSTEMS[name]().caveat
        if caveat:
            console.print(f"[dim]{SYSTEMS[name]().name}: {caveat}[/dim]")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {"sagas": args.sagas, "runs": args.runs, "systems": matrix.systems},
        "summary": rows,
        "runs": [result.to_json() for result in results],
        "seconds": round(time.monotonic() - began),
    }
    out.write_text(json.dumps(document, indent=2))
    console.print(f"results: {out} ({document['seconds']} s)")
    return 0 if len(results) == pairs * matrix.runs else 1


if __name__ == "__main__":
    sys.exit(main())
