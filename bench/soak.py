"""``python -m bench.soak``: a long run of this product that shows nothing grows without bound.

One orchestrator and one participant (PostgreSQL) run ``--sagas`` sagas of the standard
workload, ``--concurrency`` in flight, with short dedupe and inbox retention periods so that
pruning runs many times within the run. After every ``--every`` sagas it samples the rows of
every table that grows per message and the resident memory (VmRSS, not the peak) of the
orchestrator and the participant. Saga rows, their steps and their history are the record
users query and are kept; the dedupe tables, the outbox and the inbox must level off, and so
must memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from bench import procstat, services
from bench.ours import Ours
from bench.runner import RunFailed, drive, process_roles

TABLES = (
    "saga_instances",
    "saga_history",
    "processed_messages",
    "outbox",
    "saga_inbox",
)
"""Tables sampled: the first two are the kept record, the rest must level off."""


async def sample(db: asyncpg.Connection, system: Ours) -> dict[str, Any]:
    rows = {table: int(await db.fetchval(f"SELECT count(*) FROM {table}")) for table in TABLES}
    rss = {
        role: max(procstat.rss_mb(pid) for pid in pids)
        for role, pids in system.processes().roles.items()
    }
    return {"rows": rows, "rss_mb": rss}


async def soak(args: argparse.Namespace, console: Console) -> list[dict[str, Any]]:
    endpoints = services.Endpoints(amqp_base=args.amqp, postgres_base=args.postgres)
    retention = f"{args.retention}s"
    system = Ours(extra_env={"SAGA_DEDUPE_RETENTION": retention, "SAGA_INBOX_RETENTION": retention})
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as workdir:
        shared = await services.prepare(endpoints, "soak", workdir)
        db = await asyncpg.connect(shared.postgres_dsn)
        try:
            await system.start(shared)
            try:
                prefix = uuid.uuid4().hex[:8]
                done = 0
                began = time.monotonic()
                while done < args.sagas:
                    chunk = min(args.every, args.sagas - done)
                    chunk_began = time.monotonic()
                    meter = procstat.CpuMeter()
                    meter.start(process_roles(system))
                    await drive(
                        system,
                        db,
                        f"{prefix}-{done}",
                        chunk,
                        args.concurrency,
                        False,
                        within=max(300.0, chunk / 5),
                    )
                    done += chunk
                    spent = meter.stop(process_roles(system))
                    point = {
                        "sagas": done,
                        "seconds": round(time.monotonic() - began),
                        "sagas_per_second": chunk / (time.monotonic() - chunk_began),
                        "cpu_ms_per_saga": {
                            role: seconds * 1000 / chunk for role, seconds in spent.items()
                        },
                        **await sample(db, system),
                    }
                    samples.append(point)
                    console.print(
                        f"{done:>8,} sagas  {point['sagas_per_second']:6.1f}/s  "
                        f"CPU {sum(point['cpu_ms_per_saga'].values()):5.1f} ms/saga  "
                        + "  ".join(f"{name} {count:,}" for name, count in point["rows"].items())
                        + "  RSS "
                        + "/".join(f"{mb:.0f}" for mb in point["rss_mb"].values())
                        + " MB"
                    )
            finally:
                await system.stop()
        finally:
            await db.close()
            await services.release(endpoints, shared)
    return samples


def table(samples: Sequence[dict[str, Any]]) -> Table:
    out = Table(title="rows and resident memory as the run goes on", title_justify="left")
    out.add_column("sagas", justify="right")
    out.add_column("sagas/s", justify="right")
    out.add_column("CPU ms/saga", justify="right")
    for name in TABLES:
        out.add_column(name, justify="right")
    out.add_column("RSS MB orch/part", justify="right")
    for point in samples:
        out.add_row(
            f"{point['sagas']:,}",
            f"{point['sagas_per_second']:.0f}",
            f"{sum(point.get('cpu_ms_per_saga', {}).values()):.1f}",
            *(f"{point['rows'][name]:,}" for name in TABLES),
            "/".join(f"{mb:.0f}" for mb in point["rss_mb"].values()),
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="A long run: do the dedupe tables, the inbox and memory level off?",
    )
    parser.add_argument("--sagas", type=int, default=100_000, help="sagas (default 100,000)")
    parser.add_argument("--concurrency", type=int, default=200, help="in flight (default 200)")
    parser.add_argument("--every", type=int, default=10_000, help="sample every this many")
    parser.add_argument(
        "--retention", type=int, default=30, help="dedupe and inbox retention, seconds (30)"
    )
    parser.add_argument("--out", default="bench/results/soak.json", help="JSON results file")
    parser.add_argument("--amqp", default=services.Endpoints.amqp_base, help="broker base URL")
    parser.add_argument(
        "--postgres", default=services.Endpoints.postgres_base, help="PostgreSQL base URL"
    )
    args = parser.parse_args(argv)
    if min(args.sagas, args.concurrency, args.every, args.retention) < 1:
        parser.error("--sagas, --concurrency, --every and --retention must be at least 1")
    console = Console(width=max(Console().width, 160))
    try:
        with services.one_run_at_a_time():
            samples = asyncio.run(soak(args, console))
    except (RunFailed, services.ServiceError, OSError) as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    console.print(table(samples))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": vars(args),
        "samples": samples,
    }
    out.write_text(json.dumps(document, indent=2))
    console.print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
