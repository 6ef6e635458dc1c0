"""The broker failing under load: every connection of the test's vhost closed again and again
(R6), and the whole broker stopped and started (R5, ``make test-faults`` only: it stops the
shared RabbitMQ). After each fault every consumer must come back, checked by the queue's
consumer count, and no saga may be lost, stuck or done twice.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote, urlsplit

import pytest
from broker import RabbitService

from orchestrator.topology import REPLY_QUEUE, START_QUEUE, participant_queue

from .conftest import MakeRig
from .faultrig import PARTICIPANT_NAMES, now, scaled

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(1800)]

WORK_QUEUES = (START_QUEUE, REPLY_QUEUE, *(participant_queue(n) for n in PARTICIPANT_NAMES))
CONSUMERS_BACK_WITHIN = 30.0


async def consumers(rabbit: RabbitService, vhost: str) -> dict[str, int]:
    """Consumers per work queue of the vhost (0 for a queue not listed)."""
    listing = await rabbit.rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "consumers")
    found = {
        parts[0]: int(parts[1])
        for parts in (line.split() for line in listing.splitlines())
        if len(parts) == 2 and parts[1].isdigit()
    }
    return {queue: found.get(queue, 0) for queue in WORK_QUEUES}


async def until_every_consumer_is_back(rabbit: RabbitService, vhost: str) -> float:
    """Seconds until every work queue has a consumer again; fails after the bound."""
    started = time.monotonic()
    while True:
        try:
            counts = await consumers(rabbit, vhost)
        except Exception:  # the broker is still starting: rabbitmqctl fails meanwhile
            counts = {}
        if counts and all(counts.values()):
            return time.monotonic() - started
        if time.monotonic() - started > CONSUMERS_BACK_WITHIN:
            raise AssertionError(
                f"consumers not back within {CONSUMERS_BACK_WITHIN:g}s: {counts or 'no listing'}"
            )
        await asyncio.sleep(0.2)


def _vhost(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_r6_every_connection_closed_again_and_again(
    make_rig: MakeRig, amqp_url: str, rabbit_service: RabbitService
) -> None:
    rig = make_rig("R6 close_all_connections")
    vhost = _vhost(amqp_url)
    back: list[float] = []
    await rig.open()
    load = asyncio.create_task(rig.load(rig.plan(scaled(120, 1000))))
    closes = scaled(3, 20)
    while closes and not load.done():
        await asyncio.sleep(rig.rng.uniform(0.5, 2.5))
        at = now()
        await rabbit_service.rabbitmqctl("close_all_connections", "--vhost", vhost, "fault test")
        back.append(await until_every_consumer_is_back(rabbit_service, vhost))
        rig.note("close_all_connections", at, now())
        closes -= 1
    report = await rig.finish(await load)
    print(f"consumers back after {', '.join(f'{s:.1f}s' for s in back)}")
    report.check()


@pytest.mark.faults
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_r5_the_broker_stopped_and_started(
    make_rig: MakeRig, amqp_url: str, rabbit_service: RabbitService
) -> None:
    rig = make_rig("R5 stop_app/start_app")
    vhost = _vhost(amqp_url)
    back: list[float] = []
    await rig.open()
    load = asyncio.create_task(rig.load(rig.plan(scaled(200, 1000))))
    stops = scaled(2, 10)
    while stops and not load.done():
        await asyncio.sleep(rig.rng.uniform(1.0, 3.0))
        at = now()
        await rabbit_service.rabbitmqctl("stop_app")
        try:
            await asyncio.sleep(rig.rng.uniform(1.0, 10.0))
        finally:
            await rabbit_service.rabbitmqctl("start_app")
        back.append(await until_every_consumer_is_back(rabbit_service, vhost))
        rig.note("stop_app", at, now())
        stops -= 1
    report = await rig.finish(await load, within=180)
    print(f"consumers back {', '.join(f'{s:.1f}s' for s in back)} after start_app")
    report.check()
