"""The queues as the broker holds them after the orchestrator declared its topology: quorum
queues, a delivery limit on each (3.10 has no default), and at-least-once dead-lettering
(which needs reject-publish overflow) into a quorum DLQ: the settings RELIABILITY.md asks for,
read back from the broker rather than from our own code."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import pytest
from broker import RabbitService

from orchestrator.topology import (
    DEAD_LETTER_EXCHANGE,
    REPLY_QUEUE,
    START_QUEUE,
    orchestrator_topology,
    participant_queue,
)
from orchestrator.transports.amqp import AmqpTransport

pytestmark = pytest.mark.rabbitmq


async def test_every_work_queue_is_quorum_limited_and_dead_letters_at_least_once(
    amqp_url: str, rabbit_service: RabbitService
) -> None:
    transport = AmqpTransport(amqp_url, name="test-topology")
    await transport.connect()
    try:
        await transport.declare(orchestrator_topology(["alpha"]))
    finally:
        await transport.close()
    vhost = unquote(urlsplit(amqp_url).path[1:])
    listing = await rabbit_service.rabbitmqctl(
        "list_queues", "-q", "-p", vhost, "name", "type", "arguments"
    )
    # rabbitmqctl prints arguments as {"key",value} or, by version, {<<"key">>,type,value}.
    plain = re.sub(r"<<|>>|\b(?:long|longstr|signedint),", "", listing)
    queues = {line.split()[0]: line for line in plain.splitlines() if line.strip()}
    limits = {START_QUEUE: 20, REPLY_QUEUE: 20, participant_queue("alpha"): 5}
    for queue, limit in limits.items():
        line = queues[queue]
        assert line.split()[1] == "quorum", line
        for expected in (
            f'{{"x-delivery-limit",{limit}}}',
            '{"x-dead-letter-strategy","at-least-once"}',
            '{"x-overflow","reject-publish"}',
            f'{{"x-dead-letter-exchange","{DEAD_LETTER_EXCHANGE}"}}',
        ):
            assert expected in line, f"{queue}: {expected} missing from {line}"
        assert queues[f"{queue}.dlq"].split()[1] == "quorum"
