"""The broker drops every connection mid-run: consumers come back, nothing is lost or doubled."""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import unquote, urlsplit

from broker import run
from harness import Rig
from testapp import trio_input

from orchestrator.core.state import SagaStatus


def _vhost(url: str) -> str:
    return unquote(urlsplit(url).path[1:])


async def _consumers(vhost: str) -> dict[str, int]:
    out = await run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "consumers"])
    counts = {}
    for line in out.splitlines():
        name, _, count = line.rpartition("\t")
        if name and count.isdigit():
            counts[name] = int(count)
    return counts


async def _until_consumers_back(vhost: str, queues: list[str], within: float = 30.0) -> float:
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        counts = await _consumers(vhost)
        if all(counts.get(queue, 0) >= 1 for queue in queues):
            return loop.time() - began
        if loop.time() - began > within:
            raise AssertionError(f"consumers not back after {within}s: {counts}")
        await asyncio.sleep(0.2)


async def test_connections_closed_by_the_broker_mid_run(rig: Rig) -> None:
    vhost = _vhost(rig.amqp_url)
    queues = [
        "saga.orchestrator.start",
        "saga.orchestrator.replies",
        "saga.participant.alpha",
        "saga.participant.beta",
        "saga.participant.gamma",
    ]
    inputs = [trio_input(b={"delay_first": 0.05}) for _ in range(60)]
    started = asyncio.create_task(rig.start(inputs))
    for _ in range(2):
        await asyncio.sleep(0.3)  # fault schedule: close while sagas are in flight
        await run(["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "test fault"])
        recovery = await _until_consumers_back(vhost, queues)
        print(f"consumers back {recovery:.2f}s after the broker closed every connection")
    saga_ids = await started
    records = await rig.wait_terminal(saga_ids, within=90)
    assert {record.state.status for record in records.values()} == {SagaStatus.COMPLETED}
    counts = Counter((row.saga_id, row.step, row.kind) for row in await rig.effects())
    assert len(counts) == 3 * len(saga_ids)
    assert set(counts.values()) == {1}, [key for key, n in counts.items() if n > 1][:5]
