"""The migrations on both databases: upgrade from empty, down to nothing and up again,
models and migrations agree, the store refuses an unmigrated database, and ``saga db``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator import migrations
from orchestrator.cli import cli
from orchestrator.store import SchemaNotReady, StoreUnavailable
from orchestrator.stores import BadDatabaseUrl, MigrationsOutOfDate, SqlStore, mask_url
from orchestrator.stores.engine import create_engine
from orchestrator.stores.tables import metadata

TABLES = {"saga_instances", "saga_steps", "saga_history", "outbox", "processed_messages"}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    return set(names)


async def _sql(engine: AsyncEngine, statement: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.text(statement))


def test_the_migrations_are_found_and_have_one_head() -> None:
    location = migrations.script_location()
    assert (location / "env.py").is_file()
    assert not (location / "__init__.py").exists()  # must never shadow the alembic library
    assert migrations.head() == "0002"
    assert set(metadata.tables) == TABLES


async def test_upgrade_from_empty_creates_every_table(database_url: str) -> None:
    assert await asyncio.to_thread(migrations.current, database_url) is None
    revision = await asyncio.to_thread(migrations.upgrade, database_url)
    assert revision == migrations.head()
    assert await _tables(database_url) == TABLES | {"alembic_version"}
    # Upgrading again is a no-op.
    assert await asyncio.to_thread(migrations.upgrade, database_url) == revision


async def test_downgrade_to_base_drops_everything_and_upgrade_restores_it(
    database_url: str,
) -> None:
    await asyncio.to_thread(migrations.upgrade, database_url)
    assert await asyncio.to_thread(migrations.downgrade, database_url, "base") is None
    assert await _tables(database_url) <= {"alembic_version"}
    assert await asyncio.to_thread(migrations.upgrade, database_url) == migrations.head()
    assert await _tables(database_url) == TABLES | {"alembic_version"}


async def test_models_and_migrations_agree(database_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, database_url)
    await asyncio.to_thread(migrations.check, database_url)


async def test_check_notices_a_schema_that_drifted(database_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, database_url)
    engine = create_engine(database_url)
    try:
        await _sql(engine, "DROP INDEX ix_saga_instances_created_at")
    finally:
        await engine.dispose()
    with pytest.raises(MigrationsOutOfDate, match="ix_saga_instances_created_at"):
        await asyncio.to_thread(migrations.check, database_url)


async def test_status_columns_have_check_constraints(database_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, database_url)
    engine = create_engine(database_url)
    bad = (
        "INSERT INTO saga_instances (id, name, version, state, definition, lock_version,"
        " created_at, updated_at) VALUES ('x', 'n', 1, 'sleeping', '{}', 1,"
        " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    try:
        with pytest.raises(sa.exc.IntegrityError, match=r"ck_saga_instances_state|CHECK"):
            await _sql(engine, bad)
    finally:
        await engine.dispose()


async def test_the_store_refuses_an_unmigrated_database(database_url: str) -> None:
    store = await SqlStore.connect(database_url)
    try:
        with pytest.raises(SchemaNotReady) as raised:
            await store.check_schema()
        assert str(raised.value) == (
            f"the database at {store.url} is not migrated: run `saga db upgrade`"
        )
        # A store used without the check says the same, not "cannot be reached".
        with pytest.raises(SchemaNotReady, match="not migrated: run `saga db upgrade`"):
            await store.list_sagas()
        await asyncio.to_thread(migrations.upgrade, database_url)
        await store.check_schema()
        await asyncio.to_thread(migrations.downgrade, database_url, "base")
        with pytest.raises(SchemaNotReady):
            await store.check_schema()
    finally:
        await store.close()


async def test_saga_db_upgrade_works_from_any_directory(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SAGA_DATABASE_URL", database_url)
    runner = CliRunner()
    masked = mask_url(database_url)

    result = await asyncio.to_thread(runner.invoke, cli, ["db", "current"])
    assert result.exit_code == 0, result.output
    assert result.output == f"database {masked} is not migrated: run `saga db upgrade`\n"

    result = await asyncio.to_thread(runner.invoke, cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output == f"database {masked} is at revision {migrations.head()} (head)\n"

    monkeypatch.delenv("SAGA_DATABASE_URL")
    options = ["--database-url", database_url]
    result = await asyncio.to_thread(runner.invoke, cli, ["db", "current", *options])
    assert result.exit_code == 0, result.output
    assert result.output == f"database {masked} is at revision {migrations.head()} (head)\n"
    assert list(elsewhere.iterdir()) == []  # nothing written to the working directory


def test_saga_db_upgrade_default_is_sqlite_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAGA_DATABASE_URL", raising=False)
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert (
        result.output
        == f"database sqlite+aiosqlite:///./saga.db is at revision {migrations.head()} (head)\n"
    )
    assert (tmp_path / "saga.db").is_file()


def _saga(*args: str) -> subprocess.CompletedProcess[str]:
    """``saga`` through its real entry point, which turns errors into one sentence."""
    return subprocess.run(
        [sys.executable, "-c", "from orchestrator.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_saga_db_upgrade_on_an_unreachable_database_says_so_in_one_sentence() -> None:
    url = "postgresql+asyncpg://saga:s3cret-pw@127.0.0.1:1/saga"
    result = _saga("db", "upgrade", "--database-url", url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "s3cret-pw" not in result.stderr
    assert result.stderr.startswith(
        "error: the database at postgresql+asyncpg://saga:***@127.0.0.1:1/saga cannot be reached:"
    )
    assert result.stderr.count("\n") == 1, result.stderr


def test_saga_db_refuses_an_unsupported_url() -> None:
    result = CliRunner().invoke(cli, ["db", "current", "--database-url", "mysql://u:pw@h/d"])
    assert result.exit_code == 1
    assert isinstance(result.exception, BadDatabaseUrl)
    assert str(result.exception) == (
        "the database URL mysql://u:***@h/d uses the unsupported driver 'mysql':"
        " expected sqlite+aiosqlite:///PATH or"
        " postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"
    )


async def test_the_store_says_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot be reached"):
        await SqlStore.connect(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'saga.db'}")
    with pytest.raises(StoreUnavailable, match=r"saga:\*\*\*@127\.0\.0\.1:1/"):
        await SqlStore.connect("postgresql+asyncpg://saga:pw@127.0.0.1:1/saga")


async def test_migration_functions_refuse_to_block_the_event_loop(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"asyncio\.to_thread"):
        migrations.upgrade(f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}")


async def test_the_store_warns_when_autovacuum_would_never_reclaim_pruned_rows(
    migrated_store: SqlStore,
) -> None:
    warnings = await migrated_store.maintenance_warnings()
    if migrated_store.url.startswith("sqlite"):
        assert warnings == []
        return
    engine = create_engine(migrated_store.url)
    try:
        async with engine.connect() as connection:
            setting = await connection.scalar(sa.text("SHOW autovacuum"))
    finally:
        await engine.dispose()
    if setting == "on":
        assert warnings == []
    else:
        [warning] = warnings
        assert warning.startswith(f"PostgreSQL's autovacuum is off at {migrated_store.url}:")
        assert "the outbox and processed_messages tables" in warning
