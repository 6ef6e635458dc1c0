"""The benchmark harness end to end on the real broker and database, at a tiny size: every
saga of each system ends, and the counts per saga are those the design says."""

from __future__ import annotations

import pytest

from bench.floor import Floor
from bench.ours import Ours
from bench.runner import Workload, measure
from bench.services import Endpoints

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(300)]


async def test_the_floor_makes_seven_writes_and_sends_seven_messages_per_saga() -> None:
    result = await measure(Floor(), Workload(40, 10, fail=False, warmup=5), Endpoints(), "t-floor")
    assert result.sagas_per_second > 0
    assert result.p99_ms >= result.p50_ms > 0
    # Start insert, three updates, three effects; start, three commands, three replies.
    assert result.commits_per_saga == pytest.approx(7, abs=0.5)
    assert result.messages_per_saga == pytest.approx(7, abs=0.5)
    assert set(result.cpu_ms_per_saga) == {"orchestrator", "participants", "postgresql", "rabbitmq"}


async def test_this_product_runs_the_compensation_variant_to_its_end() -> None:
    result = await measure(Ours(), Workload(30, 10, fail=True, warmup=5), Endpoints(), "t-ours")
    assert result.sagas_per_second > 0
    # Start, three actions and two compensations, with their replies: 11 messages at least.
    assert result.messages_per_saga >= 11
    assert result.peak_rss_mb["orchestrator"] > 0
