"""PostgreSQL restarts while sagas run: the orchestrator and the participants wait for it and
go on; nothing is lost, nothing done twice. A fault test (``make test-faults``): it restarts
the local PostgreSQL server, which every other test on the machine shares."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from broker import run
from harness import Rig
from testapp import trio_input, trio_yaml

from orchestrator.core.state import SagaStatus

pytestmark = pytest.mark.faults

SEED = random.SystemRandom().randrange(2**32)
SAGAS = 150


def _cluster() -> list[str]:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.fail("this fault test restarts the local PostgreSQL with pg_ctlcluster; none here")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


@pytest.fixture
async def rig(
    tmp_path: Path, amqp_url: str, database_url: str, participant_database_url: str
) -> AsyncIterator[Rig]:
    """Step timeouts longer than the outage: this test is about losing and doubling nothing,
    not about the timeout budget (a reply held up by a restart must not run attempts out)."""
    rig = await Rig.create(
        tmp_path,
        amqp_url,
        database_url,
        participant_database_url,
        definition=trio_yaml(timeout="30s"),
    )
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        yield rig
    finally:
        await rig.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_mid_run(rig: Rig, mode: str) -> None:
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    inputs = [trio_input(b={"delay_first": rng.uniform(0, 2.0)}) for _ in range(SAGAS)]
    saga_ids = await rig.start(inputs)
    await asyncio.sleep(rng.uniform(0.1, 0.5))  # fault schedule, from the seed
    store = await rig.reader()
    in_flight = len(await store.list_sagas(state=SagaStatus.RUNNING, limit=0))
    assert in_flight > 0, "every saga ended before the fault: the test proves nothing"
    began = asyncio.get_running_loop().time()
    await run([*_cluster(), "restart", "-m", mode])
    records = await rig.wait_terminal(saga_ids, within=120)
    took = asyncio.get_running_loop().time() - began
    print(
        f"PostgreSQL restart ({mode}) with {in_flight} of {SAGAS} sagas in flight:"
        f" all terminal {took:.1f}s after it began"
    )
    states = Counter(record.state.status.value for record in records.values())
    errors = [r.state.error for r in records.values() if r.state.error is not None]
    assert states == {"completed": SAGAS}, (states, errors[:3])
    counts = Counter((row.saga_id, row.step, row.kind) for row in await rig.effects())
    assert len(counts) == 3 * SAGAS
    assert set(counts.values()) == {1}
