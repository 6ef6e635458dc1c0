"""RabbitMQ names and queue arguments: the one place that says what the topology is.

Every process declares what it uses, idempotently, with exactly these arguments
(a queue re-declared with other arguments is a channel error, so they must not
drift between the orchestrator, participants and tools).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

COMMANDS_EXCHANGE = "saga.commands"
"""Direct exchange; routing key = participant name."""
DEAD_LETTER_EXCHANGE = "saga.dlx"
"""Direct exchange; routing key = the DLQ's name (``<queue>.dlq``)."""
START_QUEUE = "saga.orchestrator.start"
REPLY_QUEUE = "saga.orchestrator.replies"
PARTICIPANT_QUEUE_PREFIX = "saga.participant."
DLQ_SUFFIX = ".dlq"

PARTICIPANT_DELIVERY_LIMIT = 5
"""Deliveries of a command before the broker dead-letters it (3.x has no default): a
handler that crashes its process five times in a row is a poison message."""
ORCHESTRATOR_DELIVERY_LIMIT = 20
"""The orchestrator dead-letters bad input itself; this limit only stops a crash loop. It
is higher because a message in hand when a process dies counts as a delivery too."""
DEFAULT_MAX_LENGTH = 1_000_000
"""Queue length past which publishers get nacks (back-pressure, not silent drops)."""


def participant_queue(participant: str) -> str:
    """``saga.participant.<name>``: where a participant's commands wait."""
    return f"{PARTICIPANT_QUEUE_PREFIX}{participant}"


def dead_letter_queue(queue: str) -> str:
    """``<queue>.dlq``: where the queue's dead letters go."""
    return f"{queue}{DLQ_SUFFIX}"


@dataclass(frozen=True)
class QueueSpec:
    """A durable quorum queue, bound to an exchange with a routing key (or only the default one)."""

    name: str
    arguments: dict[str, str | int]
    exchange: str | None = None
    routing_key: str | None = None


@dataclass(frozen=True)
class Topology:
    """Everything one process declares before it consumes or publishes."""

    exchanges: tuple[str, ...] = (COMMANDS_EXCHANGE, DEAD_LETTER_EXCHANGE)
    queues: tuple[QueueSpec, ...] = field(default_factory=tuple)


def work_queue(
    name: str,
    *,
    exchange: str | None = None,
    routing_key: str | None = None,
    delivery_limit: int,
) -> list[QueueSpec]:
    """A quorum work queue with a delivery limit and at-least-once dead-lettering, and its DLQ."""
    dlq = dead_letter_queue(name)
    return [
        QueueSpec(
            name=name,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                "x-dead-letter-routing-key": dlq,
                # at-least-once dead-lettering (3.10+) needs reject-publish overflow.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-max-length": DEFAULT_MAX_LENGTH,
            },
            exchange=exchange,
            routing_key=routing_key,
        ),
        QueueSpec(
            name=dlq,
            arguments={"x-queue-type": "quorum"},
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=dlq,
        ),
    ]


def participant_queues(participant: str) -> list[QueueSpec]:
    """A participant's command queue (bound to ``saga.commands``) and its DLQ."""
    return work_queue(
        participant_queue(participant),
        exchange=COMMANDS_EXCHANGE,
        routing_key=participant,
        delivery_limit=PARTICIPANT_DELIVERY_LIMIT,
    )


def orchestrator_queues() -> list[QueueSpec]:
    """The start and reply queues (and their DLQs)."""
    return [
        *work_queue(START_QUEUE, delivery_limit=ORCHESTRATOR_DELIVERY_LIMIT),
        *work_queue(REPLY_QUEUE, delivery_limit=ORCHESTRATOR_DELIVERY_LIMIT),
    ]


def orchestrator_topology(participants: Iterable[str]) -> Topology:
    """The orchestrator's queues plus every participant queue its definitions name,
    so no command waits on a queue that does not exist yet."""
    queues = orchestrator_queues()
    for participant in sorted(set(participants)):
        queues.extend(participant_queues(participant))
    return Topology(queues=tuple(queues))


def participant_topology(participant: str) -> Topology:
    """What a participant declares: its own queue, and the orchestrator's queues it answers
    into (so a reply never finds its queue missing)."""
    return Topology(queues=(*participant_queues(participant), *orchestrator_queues()))
