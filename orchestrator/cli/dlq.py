"""``saga dlq list``, ``saga dlq show``, ``saga dlq replay``: dead letters, for operators.

The logic is :mod:`orchestrator.dlq`; this module picks the DLQs (the orchestrator's and
those of every participant the definitions in ``SAGA_DEFINITIONS`` name, or the one of
``--queue``), runs it and prints the outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click

from orchestrator.dead_letters import (
    MAX_READ,
    DeadLetterRow,
    Replayed,
    dead_letter_queues,
    describe,
)
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.dlq import DeadLetterQueues
from orchestrator.errors import UsageError
from orchestrator.settings import Settings
from orchestrator.topology import DLQ_SUFFIX, dead_letter_queue

__all__ = ["dlq"]

T = TypeVar("T")

_MAX_QUEUE_NAME = 255 - len(DLQ_SUFFIX)
"""AMQP queue names are at most 255 bytes, and the DLQ's name is the queue's plus ``.dlq``."""
_HUMAN_BODY_CHARS = 8192


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _registry(settings: Settings) -> DefinitionRegistry | None:
    """The definitions, or None without a definitions folder (DefinitionInvalid if broken)."""
    if not settings.definitions_dir.is_dir():
        return None
    return DefinitionRegistry.load_dir(settings.definitions_dir)


async def _queues(
    dlqs: DeadLetterQueues, registry: DefinitionRegistry | None, queue: str | None
) -> list[str]:
    """The DLQs to read: every one the topology has, or the one of ``--queue``."""
    known = dead_letter_queues(registry.participants() if registry is not None else ())
    if queue is None:
        return known
    if queue.endswith(DLQ_SUFFIX):
        raise UsageError(
            f"--queue takes the queue that dead-letters, not its DLQ: "
            f"--queue {queue.removesuffix(DLQ_SUFFIX)}"
        )
    if not queue or len(queue.encode()) > _MAX_QUEUE_NAME:
        raise UsageError(f"--queue {queue!r} is not a queue name (1 to {_MAX_QUEUE_NAME} bytes)")
    dlq = dead_letter_queue(queue)
    if dlq not in known and not await dlqs.exists(dlq):
        raise UsageError(f"no queue {queue!r} dead-letters here: there is no {dlq} on the broker")
    return [dlq]


def _run(
    queue: str | None,
    action: Callable[[DeadLetterQueues, DefinitionRegistry | None, list[str]], Awaitable[T]],
) -> T:
    """Connect, pick the DLQs, run ``action``; warn about DLQs too long to read in full."""
    settings = Settings.from_env(os.environ)
    registry = _registry(settings)
    # aiormq logs a failed connect itself; the error sentence below says it once.
    logging.getLogger("aiormq").addHandler(logging.NullHandler())

    async def run() -> T:
        async with await DeadLetterQueues.connect(settings.amqp_url) as dlqs:
            result = await action(dlqs, registry, await _queues(dlqs, registry, queue))
            for name in dlqs.truncated:
                click.echo(f"warning: read only the first {MAX_READ} messages of {name}", err=True)
            return result

    return asyncio.run(run())


@click.group()
def dlq() -> None:
    """Inspect and replay dead-lettered messages."""


@dlq.command("list")
@click.option("--queue", help="Only messages that died in this queue.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_dead_letters(queue: str | None, as_json: bool) -> None:
    """List dead-lettered messages (never their bodies); nothing is removed."""
    rows = _run(queue, lambda dlqs, _registry, names: dlqs.listing(names))
    if as_json:
        _echo_json([row.to_json() for row in rows])
    else:
        _print_rows(rows)


def _print_rows(rows: Sequence[DeadLetterRow]) -> None:
    if not rows:
        click.echo("no dead letters")
        return
    ids = [row.id or "-" for row in rows]
    id_width = max(len("id"), *(len(i) for i in ids))
    queue_width = max(len("queue"), *(len(row.queue) for row in rows))
    death_width = max(len("death"), *(len(row.death_reason or "-") for row in rows))
    click.echo(
        f"{'id':<{id_width}}  {'queue':<{queue_width}}  {'death':<{death_width}}  "
        f"{'count':>5}  {'first death':<19}  reason"
    )
    for id_, row in zip(ids, rows, strict=True):
        first = (row.first_death_at or "-")[:19].replace("T", " ")
        click.echo(
            f"{id_:<{id_width}}  {row.queue:<{queue_width}}  "
            f"{row.death_reason or '-':<{death_width}}  {row.count:>5}  {first:<19}  {row.reason}"
        )


@dlq.command()
@click.argument("message_id")
@click.option("--queue", help="Look only among messages that died in this queue.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(message_id: str, queue: str | None, as_json: bool) -> None:
    """Show one dead-lettered message: properties, headers, body (secrets redacted)."""

    async def find(
        dlqs: DeadLetterQueues, registry: DefinitionRegistry | None, names: list[str]
    ) -> dict[str, Any]:
        letter = await dlqs.find(names, message_id)
        if letter is None:
            raise UsageError(f"no dead-lettered message with id {message_id}")
        return describe(letter, registry)

    shown = _run(queue, find)
    if as_json:
        _echo_json(shown)
        return
    for label in ("id", "queue", "dlq", "reason", "death_reason", "count", "first_death_at"):
        click.echo(f"{label:<15} {shown[label]}")
    for group in ("properties", "headers"):
        click.echo(group)
        values = {key: value for key, value in shown[group].items() if value is not None}
        width = max((len(key) for key in values), default=0)
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            click.echo(f"  {key:<{width}}  {text}")
    click.echo(f"body ({shown['body_bytes']} bytes)")
    if shown["body_format"] == "json":
        text = json.dumps(shown["body"], indent=2, ensure_ascii=False)
        if len(text) > _HUMAN_BODY_CHARS:
            text = text[:_HUMAN_BODY_CHARS] + "\n... (cut; --json prints all of it)"
    else:
        text = shown["body"] + (" ... (cut)" if shown["body_truncated"] else "")
    click.echo(text)


@dlq.command()
@click.argument("message_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every dead-lettered message.")
@click.option("--queue", help="Only messages that died in this queue.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def replay(
    message_ids: tuple[str, ...], replay_all: bool, queue: str | None, dry_run: bool, as_json: bool
) -> None:
    """Send dead-lettered messages back to their queues, with their ids and headers."""
    if replay_all and message_ids:
        raise UsageError("give message ids or --all, not both")
    if not replay_all and not message_ids:
        raise UsageError("give the ids of the messages to replay, or --all")
    ids = None if replay_all else frozenset(message_ids)
    results = _run(queue, lambda dlqs, _registry, names: dlqs.replay(names, ids, dry_run=dry_run))
    if as_json:
        _echo_json([result.to_json() for result in results])
    else:
        _print_replayed(results, dry_run)
    for result in results:
        if result.problem is not None:
            click.echo(f"error: {_problem(result)}", err=True)
    if any(result.problem is not None for result in results):
        sys.exit(1)


def _print_replayed(results: Sequence[Replayed], dry_run: bool) -> None:
    if not results:
        click.echo("no dead letters")
    for result in results:
        if result.replayed:
            click.echo(f"replayed {result.id} -> {result.queue}")
        elif dry_run and result.problem is None:
            click.echo(f"would replay {result.id} -> {result.queue}")


def _problem(result: Replayed) -> str:
    if result.queue is None:
        return str(result.problem)  # already "no dead-lettered message with id X"
    return f"{result.id} not replayed: {result.problem}"
