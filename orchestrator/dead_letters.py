"""Dead letters as data: what a dead-lettered message says, how it is listed and shown (with
secrets redacted), and which headers a replay keeps. Pure: no broker I/O (that is
:mod:`orchestrator.dlq`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from aio_pika.abc import AbstractIncomingMessage

from contracts import Header
from orchestrator.definitions.errors import UnknownDefinition
from orchestrator.definitions.model import SagaDefinition
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.definitions.rendering import payload_secret_fields
from orchestrator.definitions.schema import redact, secret_paths
from orchestrator.topology import DLQ_SUFFIX, orchestrator_topology
from orchestrator.transports.amqp import (
    DEAD_LETTERED_AT_HEADER,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
)

__all__ = [
    "MAX_READ",
    "REPLAY_COUNT_HEADER",
    "DeadLetter",
    "DeadLetterRow",
    "Replayed",
    "dead_letter_queues",
    "describe",
    "redact_body",
    "replay_headers",
]

JSON = Any

MAX_READ = 10_000
"""Messages read from one DLQ per command: bounds memory and the deliveries held unacked."""
BODY_PREVIEW_BYTES = 4096
"""How much of a body that is not JSON ``show`` prints (as a Python bytes literal)."""
PUBLISH_TIMEOUT = 30.0
"""Seconds to wait for the broker to confirm a replayed message."""

REPLAY_COUNT_HEADER = "x-replay-count"
ORIGINAL_USER_HEADER = "x-original-user-id"
"""A replay cannot keep ``user_id`` (the broker checks it against the replaying user)."""

_OUR_HEADERS = frozenset({REASON_HEADER, ORIGINAL_QUEUE_HEADER, DEAD_LETTERED_AT_HEADER})
_BROKER_HEADERS = frozenset({"x-death", "x-delivery-count"})
_BROKER_PREFIXES = ("x-first-death-", "x-last-death-")
_DEATHS = {
    "delivery_limit": "redelivered past the queue's delivery limit without being acknowledged "
    "(a handler that crashes its process?)",
    "rejected": "rejected by a consumer",
    "expired": "its time to live ran out in the queue",
    "maxlen": "the queue was over its length limit",
}


def dead_letter_queues(participants: Iterable[str]) -> list[str]:
    """Every DLQ the topology has: the orchestrator's, then each participant's."""
    queues = orchestrator_topology(participants).queues
    return [spec.name for spec in queues if spec.name.endswith(DLQ_SUFFIX)]


def _text(value: object) -> str | None:
    """A header value as text (AMQP strings arrive as str or bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _plain(value: object) -> JSON:
    """A header value as JSON: bytes as text, timestamps in ISO 8601."""
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return repr(bytes(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class DeadLetterRow:
    """One line of ``saga dlq list`` (PRODUCT.md): never the body, so never a secret."""

    id: str | None
    queue: str
    """The queue the message died in, where a replay sends it."""
    dlq: str
    reason: str
    death_reason: str | None
    """RabbitMQ's: ``rejected`` (our own copies too), ``delivery_limit``, ``expired``..."""
    count: int
    first_death_at: str | None
    saga_id: str | None
    step: str | None
    kind: str | None

    def to_json(self) -> dict[str, JSON]:
        """``saga dlq list --json``: one object."""
        return asdict(self)


@dataclass(frozen=True)
class DeadLetter:
    """A message as read from a DLQ; the broker keeps it until a replay acks it."""

    dlq: str
    body: bytes
    headers: Mapping[str, object]
    message_id: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    reply_to: str | None = None
    timestamp: datetime | None = None
    user_id: str | None = None
    app_id: str | None = None

    @classmethod
    def from_message(cls, dlq: str, message: AbstractIncomingMessage) -> DeadLetter:
        """The letter in a delivery from ``dlq``."""
        timestamp = message.timestamp
        return cls(
            dlq=dlq,
            body=message.body,
            headers=dict(message.headers or {}),
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            reply_to=message.reply_to,
            timestamp=timestamp if isinstance(timestamp, datetime) else None,
            user_id=message.user_id,
            app_id=message.app_id,
        )

    @property
    def home(self) -> str:
        """The queue this DLQ belongs to: the only one its messages can have come from."""
        return self.dlq.removesuffix(DLQ_SUFFIX)

    @property
    def deaths(self) -> list[Mapping[str, object]]:
        """The broker's ``x-death`` entries, most recent first (empty for our own copies)."""
        deaths = self.headers.get("x-death")
        if not isinstance(deaths, list | tuple):
            return []
        return [entry for entry in deaths if isinstance(entry, Mapping)]

    @property
    def queue(self) -> str:
        """The original queue: our header, else the broker's last death, else the DLQ's own."""
        ours = _text(self.headers.get(ORIGINAL_QUEUE_HEADER))
        if ours:
            return ours
        deaths = self.deaths
        if deaths and (theirs := _text(deaths[0].get("queue"))):
            return theirs
        return self.home

    def row(self) -> DeadLetterRow:
        """This letter's line in the listing."""
        ours = _text(self.headers.get(REASON_HEADER))
        deaths = self.deaths
        death_reason: str | None
        if ours is not None:
            reason, death_reason, count = ours, "rejected", 1
            first = _text(self.headers.get(DEAD_LETTERED_AT_HEADER))
        elif deaths:
            death_reason = _text(deaths[0].get("reason"))
            reason = _DEATHS.get(
                death_reason or "", f"dead-lettered by the broker ({death_reason})"
            )
            raw_count = deaths[0].get("count")
            count = raw_count if isinstance(raw_count, int) and raw_count > 0 else 1
            times = [entry["time"] for entry in deaths if isinstance(entry.get("time"), datetime)]
            first = min(cast(list[datetime], times)).isoformat() if times else None
        else:
            reason = "no dead-letter headers (was it published straight into the DLQ?)"
            death_reason, count, first = None, 1, None
        # A start request's correlation id is its own message id: there is no saga yet.
        saga_id = None if self.type == "saga.start" else self.correlation_id
        return DeadLetterRow(
            id=self.message_id,
            queue=self.queue,
            dlq=self.dlq,
            reason=reason,
            death_reason=death_reason,
            count=count,
            first_death_at=first,
            saga_id=saga_id,
            step=_text(self.headers.get(Header.SAGA_STEP)),
            kind=_text(self.headers.get(Header.SAGA_KIND)),
        )


def replay_headers(headers: Mapping[str, object]) -> dict[str, object]:
    """The headers a replay carries: the original ones without any dead-letter bookkeeping
    (ours, ``x-death`` and the like), plus ``x-replay-count`` one higher."""
    kept = {
        key: value
        for key, value in headers.items()
        if key not in _OUR_HEADERS
        and key not in _BROKER_HEADERS
        and not key.startswith(_BROKER_PREFIXES)
    }
    previous = _text(headers.get(REPLAY_COUNT_HEADER)) or "0"
    kept[REPLAY_COUNT_HEADER] = (int(previous) if previous.isdecimal() else 0) + 1
    return kept


def _definition(
    registry: DefinitionRegistry, name: object, version: object
) -> SagaDefinition | None:
    if not isinstance(name, str):
        return None
    try:
        if isinstance(version, int) and not isinstance(version, bool):
            return registry.get(name, version)
    except UnknownDefinition:
        pass  # a retired version: the newest one's secrets are the best guess there is
    try:
        return registry.get(name)
    except UnknownDefinition:
        return None


def redact_body(body: JSON, registry: DefinitionRegistry | None) -> JSON:
    """A parsed body with its secrets as ``***``: a start request's input by the definition's
    ``secret`` marks, a step command's payload fields that take a secret. Anything else, or a
    message of a saga the registry does not know, is returned as it is."""
    if registry is None or not isinstance(body, dict):
        return body
    definition = _definition(registry, body.get("saga_name"), body.get("saga_version"))
    if definition is None:
        return body
    if body.get("type") == "saga.start" and "input" in body:
        return {**body, "input": redact(body["input"], secret_paths(definition))}
    if body.get("type") == "saga.command" and "payload" in body:
        names = [step.name for step in definition.steps]
        if body.get("step") not in names:
            return body
        compensation = body.get("kind") == "compensation"
        fields = payload_secret_fields(
            definition, names.index(body["step"]), compensation=compensation
        )
        # Paths are rooted at "payload" so a payload field named "input" is not taken for
        # the "input." prefix that redact() allows.
        paths = frozenset(f"payload.{field}" for field in fields)
        return {**body, "payload": redact(body["payload"], paths, "payload")}
    return body


def describe(letter: DeadLetter, registry: DefinitionRegistry | None) -> dict[str, JSON]:
    """``saga dlq show --json``: the listing row, the properties, the headers and the body
    (parsed and redacted when it is JSON, else the start of its bytes)."""
    body: JSON
    try:
        parsed = json.loads(letter.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = repr(letter.body[:BODY_PREVIEW_BYTES])
        body_format, truncated = "bytes", len(letter.body) > BODY_PREVIEW_BYTES
    else:
        # Outside the try: a failure to redact must not fall back to showing the raw bytes.
        body = redact_body(parsed, registry)
        body_format, truncated = "json", False
    properties = {
        "message_id": letter.message_id,
        "correlation_id": letter.correlation_id,
        "type": letter.type,
        "content_type": letter.content_type,
        "content_encoding": letter.content_encoding,
        "reply_to": letter.reply_to,
        "timestamp": None if letter.timestamp is None else letter.timestamp.isoformat(),
        "user_id": letter.user_id,
        "app_id": letter.app_id,
    }
    return {
        **letter.row().to_json(),
        "properties": properties,
        "headers": {key: _plain(value) for key, value in letter.headers.items()},
        "body": body,
        "body_format": body_format,
        "body_bytes": len(letter.body),
        "body_truncated": truncated,
    }


@dataclass(frozen=True)
class Replayed:
    """What became of one message a replay was asked for."""

    id: str | None
    queue: str | None
    """Where it was (or would be) sent; None when it was not found."""
    replayed: bool
    problem: str | None = None
    """Why it was not replayed (None for a dry run, or when it was)."""

    def to_json(self) -> dict[str, JSON]:
        """``saga dlq replay --json``: one object."""
        return {"id": self.id, "queue": self.queue, "replayed": self.replayed}
