"""The pruning loop and its retention settings (SAGA_DEDUPE_RETENTION, SAGA_INBOX_RETENTION)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.pruning import PruneLoop
from orchestrator.settings import Settings, SettingsError
from orchestrator.store import StoreUnavailable
from participants.runtime import ParticipantSettings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Table:
    """Rows with times; prune deletes the oldest ``limit`` before the cutoff."""

    def __init__(self, ages: list[timedelta]) -> None:
        self.rows = sorted(NOW - age for age in ages)
        self.calls: list[tuple[datetime, int]] = []
        self.fail = 0
        self.empty = asyncio.Event()

    async def prune(self, cutoff: datetime, limit: int) -> int:
        self.calls.append((cutoff, limit))
        if self.fail:
            self.fail -= 1
            raise StoreUnavailable("the database is down")
        old = [row for row in self.rows if row < cutoff][:limit]
        self.rows = [row for row in self.rows if row not in old]
        if not self.rows:
            self.empty.set()
        return len(old)


async def test_a_pass_deletes_everything_past_retention_in_batches() -> None:
    table = Table([timedelta(hours=h) for h in (1, 25, 26, 27, 28, 29)])
    loop = PruneLoop(
        table.prune, retention=timedelta(hours=24), clock=lambda: NOW, what="rows", batch=2
    )

    assert await loop.prune_once() == 5
    assert table.rows == [NOW - timedelta(hours=1)]
    assert [limit for _, limit in table.calls] == [2, 2, 2]
    assert {cutoff for cutoff, _ in table.calls} == {NOW - timedelta(hours=24)}
    assert loop.deleted == 5


async def test_the_loop_survives_an_outage_and_stops_when_told() -> None:
    table = Table([timedelta(hours=30)])
    table.fail = 1
    loop = PruneLoop(
        table.prune, retention=timedelta(hours=1), clock=lambda: NOW, what="rows", interval=0.01
    )
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(table.empty.wait(), 5)
    loop.stop()
    await asyncio.wait_for(task, 5)
    assert loop.deleted == 1
    assert len(table.calls) >= 2


def test_retention_settings() -> None:
    assert Settings.from_env({}).dedupe_retention == timedelta(hours=24)
    assert Settings.from_env({"SAGA_DEDUPE_RETENTION": "90m"}).dedupe_retention == timedelta(
        minutes=90
    )
    participant = ParticipantSettings.from_env("p", {"SAGA_INBOX_RETENTION": "48h"})
    assert participant.inbox_retention == timedelta(hours=48)
    assert ParticipantSettings.from_env("p", {}).inbox_retention == timedelta(days=7)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("forever", r"SAGA_DEDUPE_RETENTION: bad duration 'forever'"),
        ("0s", r"SAGA_DEDUPE_RETENTION must be longer than zero, not '0s'"),
        ("24", r"SAGA_DEDUPE_RETENTION: bad duration '24'"),
    ],
)
def test_a_bad_retention_is_refused_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"SAGA_DEDUPE_RETENTION": value})
