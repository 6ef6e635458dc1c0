"""Each process keeps a fixed pool of database connections (SAGA_DB_POOL_SIZE): connections
opened for a burst and closed after it would cost the database a backend process each."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.settings import Settings, SettingsError
from orchestrator.stores.engine import DEFAULT_POOL_SIZE, create_engine
from participants.runtime import ParticipantSettings


@pytest.mark.parametrize(
    "scheme", ["postgresql+asyncpg://u@db/x", "sqlite+aiosqlite:///{tmp}/s.db"]
)
async def test_the_pool_is_fixed_at_its_size(scheme: str, tmp_path: Path) -> None:
    engine = create_engine(scheme.format(tmp=tmp_path), pool_size=3)
    try:
        pool = engine.sync_engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_the_default_size_and_an_in_memory_sqlite_database_without_a_pool() -> None:
    engine = create_engine("postgresql+asyncpg://u@db/x")
    memory = create_engine("sqlite+aiosqlite://")
    try:
        assert engine.sync_engine.pool.size() == DEFAULT_POOL_SIZE  # type: ignore[attr-defined]
        assert type(memory.sync_engine.pool).__name__ == "StaticPool"
    finally:
        await engine.dispose()
        await memory.dispose()


def test_both_services_read_the_pool_size_and_refuse_a_bad_one() -> None:
    assert Settings.from_env({"SAGA_DB_POOL_SIZE": "4"}).db_pool_size == 4
    assert ParticipantSettings.from_env("p", {"SAGA_DB_POOL_SIZE": "6"}).db_pool_size == 6
    assert ParticipantSettings.from_env("p", {"SAGA_PREFETCH": "50"}).prefetch == 50
    assert ParticipantSettings.from_env("p", {}).prefetch == 20
    assert ParticipantSettings.from_env("p", {}).db_pool_size == DEFAULT_POOL_SIZE
    for value in ("0", "ten"):
        with pytest.raises(SettingsError, match="SAGA_DB_POOL_SIZE must be"):
            Settings.from_env({"SAGA_DB_POOL_SIZE": value})
        with pytest.raises(SettingsError, match="SAGA_DB_POOL_SIZE must be"):
            ParticipantSettings.from_env("p", {"SAGA_DB_POOL_SIZE": value})
