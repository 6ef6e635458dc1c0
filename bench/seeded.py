"""A database that already holds many finished sagas, for the "large table" row: does the
orchestrator stay as fast when ``saga_instances`` has a million rows (and their steps and
history)?

Seeding a million sagas takes minutes, so it is done once into a template database named
after the row count and the schema revision (``bench_seed_<n>_<revision>``), kept between
runs and invocations, and each run's database is copied from it (``CREATE DATABASE ...
TEMPLATE``, a file copy). Drop the template with ``DROP DATABASE`` to reclaim the space.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg

from bench import proc
from bench.services import Endpoints, fresh_database
from orchestrator import migrations
from orchestrator.definitions.registry import DefinitionRegistry

_MARKER = "bench_seed_done"

# Every seeded saga is a completed run of the standard saga: its row, three succeeded steps
# and the eight history events such a run writes, all a day old.
_SEED_SQL = (
    """
INSERT INTO saga_instances (id, name, version, state, definition, input, output, error,
                            idempotency_key, lock_version, trace_context, created_at, updated_at)
SELECT 'seed-' || g, 'bench_order', 1, 'completed', $1::jsonb,
       jsonb_build_object('key', 'seed-' || g, 'fail', false), '{}'::jsonb, NULL,
       'seed-' || g, 8, NULL, t.at, t.at
FROM generate_series($2::int, $3::int) AS g,
     LATERAL (SELECT now() - interval '1 day' + g * interval '1 ms' AS at) AS t
""",
    """
INSERT INTO saga_steps (saga_id, step_index, name, status, attempts, result, error,
                        effect_possible, generation, deadline_at, deadline_kind,
                        deadline_purpose, compensation_status, compensation_attempts,
                        compensation_result, compensation_error, compensation_generation)
SELECT 'seed-' || g, s.i, s.name, 'succeeded', 1, '{"ok": true}'::jsonb, NULL, true, 0,
       NULL, NULL, NULL, NULL, 0, NULL, NULL, 0
FROM generate_series($1::int, $2::int) AS g,
     (VALUES (0, 'reserve'), (1, 'charge'), (2, 'confirm')) AS s(i, name)
""",
    """
INSERT INTO saga_history (saga_id, seq, at, type, step, attempt, detail)
SELECT 'seed-' || g, h.seq, now() - interval '1 day', h.type, h.step, h.attempt, '{}'::jsonb
FROM generate_series($1::int, $2::int) AS g,
     (VALUES (1, 'started', NULL, NULL), (2, 'step_sent', 'reserve', 1),
             (3, 'step_succeeded', 'reserve', 1), (4, 'step_sent', 'charge', 1),
             (5, 'step_succeeded', 'charge', 1), (6, 'step_sent', 'confirm', 1),
             (7, 'step_succeeded', 'confirm', 1), (8, 'completed', NULL, NULL))
     AS h(seq, type, step, attempt)
""",
)
"""The saga rows (bound to the definition JSON and the first and last number), then their
steps and their history (bound to the numbers)."""

_CHUNK = 100_000
"""Sagas per seeding transaction."""


def template_name(count: int) -> str:
    return f"bench_seed_{count}_{migrations.head()[:12]}"


async def ensure_template(endpoints: Endpoints, count: int, saga_yaml: str, workdir: Path) -> str:
    """The template database holding ``count`` finished sagas, made if missing."""
    name = template_name(count)
    admin = await asyncpg.connect(endpoints.admin_dsn)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()
    if exists and await _complete(endpoints, name):
        return name
    await fresh_database(endpoints, name)
    dsn = f"{endpoints.postgres_base}/{name}"
    env = proc.environ(
        {"SAGA_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1)}
    )
    upgrade = ["-m", "orchestrator", "db", "upgrade"]
    await asyncio.to_thread(proc.run, upgrade, env=env, log=workdir / "seed.log")
    folder = workdir / "seed-sagas"
    folder.mkdir(exist_ok=True)
    (folder / "bench_order.yaml").write_text(saga_yaml)
    definition = DefinitionRegistry.load_dir(folder).get("bench_order")
    snapshot = json.dumps(definition.model_dump(mode="json"))
    db = await asyncpg.connect(dsn)
    try:
        for first in range(1, count + 1, _CHUNK):
            last = min(first + _CHUNK - 1, count)
            async with db.transaction():
                await db.execute(_SEED_SQL[0], snapshot, first, last)
                for statement in _SEED_SQL[1:]:
                    await db.execute(statement, first, last)
        await db.execute("VACUUM ANALYZE")
        await db.execute(f"CREATE TABLE {_MARKER} (sagas int NOT NULL)")
        await db.execute(f"INSERT INTO {_MARKER} VALUES ($1)", count)
    finally:
        await db.close()
    return name


async def _complete(endpoints: Endpoints, name: str) -> bool:
    db = await asyncpg.connect(f"{endpoints.postgres_base}/{name}")
    try:
        found = await db.fetchval("SELECT to_regclass($1) IS NOT NULL", _MARKER)
        return bool(found)
    finally:
        await db.close()


async def copy_into(endpoints: Endpoints, template: str, database: str) -> None:
    """Replace the run's (empty) database with a copy of ``template``."""
    await fresh_database(endpoints, database, template=template)
