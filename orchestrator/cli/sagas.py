"""``saga start``, ``saga status``, ``saga list``, ``saga history``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from contracts import StartReply
from orchestrator.client import StartClient
from orchestrator.core.state import SagaStatus
from orchestrator.definitions.durations import DurationError, parse_duration
from orchestrator.definitions.errors import DefinitionInvalid, UnknownDefinition
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.definitions.schema import validate_input
from orchestrator.engine import utc_now
from orchestrator.errors import SagaError, UsageError
from orchestrator.operations import STUCK_GRACE, Stuck, find_stuck
from orchestrator.settings import Settings
from orchestrator.store import HistoryEntry, SagaRecord
from orchestrator.stores.sql import SqlStore
from orchestrator.timeline import spans
from orchestrator.topology import Topology, orchestrator_queues
from orchestrator.transports.amqp import AmqpTransport
from orchestrator.views import (
    history_json,
    list_json,
    print_history,
    print_list,
    print_status,
    print_stuck,
    print_trace,
    status_json,
    stuck_json,
)

T = TypeVar("T")

EXIT_NOT_COMPLETED = 1
EXIT_WAIT_TIMEOUT = 2
EXIT_NO_ORCHESTRATOR = 3


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


class DurationParam(click.ParamType):  # type: ignore[type-arg]
    """``30s``, ``2m`` or plain seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value), plain_seconds=True).total_seconds()
        except DurationError as exc:
            self.fail(str(exc), param, ctx)


async def _with_store(settings: Settings, action: Callable[[SqlStore], Awaitable[T]]) -> T:
    store = await SqlStore.connect(settings.database_url)
    try:
        await store.check_schema()
        return await action(store)
    finally:
        await store.close()


# -- start ----------------------------------------------------------------------


def _read_input(text: str) -> dict[str, Any]:
    source = "--input"
    if text.startswith("@"):
        path = Path(text[1:])
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read input file {path}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{source} must be a JSON object, not {type(value).__name__}")
    return value


def _read_inputs(path: Path, key_field: str | None) -> list[tuple[dict[str, Any], str | None]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    inputs: list[tuple[dict[str, Any], str | None]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise UsageError(f"{path}:{number}: must be a JSON object")
        key = None
        if key_field is not None:
            raw = value.get(key_field)
            if raw is None or raw == "":
                raise UsageError(f"{path}:{number}: has no field {key_field!r} for the key")
            key = str(raw)
        inputs.append((value, key))
    if not inputs:
        raise UsageError(f"{path} holds no inputs")
    return inputs


def _check_locally(
    settings: Settings, name: str, inputs: list[tuple[dict[str, Any], str | None]], where: str
) -> None:
    """Refuse unknown sagas and bad input before anything is sent, when the definitions are here."""
    if not settings.definitions_dir.is_dir():
        return  # the orchestrator checks again and refuses with the same sentences
    try:
        registry = DefinitionRegistry.load_dir(settings.definitions_dir)
        definition = registry.get(name)
    except DefinitionInvalid:
        return
    except UnknownDefinition as exc:
        raise UsageError(str(exc)) from None
    for number, (value, _key) in enumerate(inputs, start=1):
        problems = validate_input(definition, value)
        if problems:
            at = f"{where}:{number}" if len(inputs) > 1 or where != "--input" else where
            raise UsageError(
                f"{at}: input does not match the schema of '{name}': " + "; ".join(problems)
            )


@click.command()
@click.argument("name")
@click.option("--input", "input_text", metavar="JSON|@FILE", help="The saga's input object.")
@click.option(
    "--inputs", "inputs_file", type=click.Path(path_type=Path), help="JSON lines: one saga each."
)
@click.option("--key", help="Idempotency key: a key seen before returns the existing saga.")
@click.option("--key-field", help="With --inputs: the field holding each line's key.")
@click.option("--wait", is_flag=True, help="Wait for the saga to end and print its status.")
@click.option("--timeout", type=DurationParam(), default="30s", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def start(
    name: str,
    input_text: str | None,
    inputs_file: Path | None,
    key: str | None,
    key_field: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Start saga NAME and print its id once the orchestrator has recorded it."""
    if (input_text is None) == (inputs_file is None):
        raise click.UsageError("give exactly one of --input or --inputs")
    if inputs_file is not None and key is not None:
        raise click.UsageError("--key applies to one saga; with --inputs use --key-field")
    if key_field is not None and inputs_file is None:
        raise click.UsageError("--key-field only applies with --inputs")
    if inputs_file is not None and wait:
        raise click.UsageError("--wait applies to one saga, not to --inputs")
    settings = _settings()
    if inputs_file is not None:
        inputs = _read_inputs(inputs_file, key_field)
        where = str(inputs_file)
    else:
        assert input_text is not None
        inputs = [(_read_input(input_text), key)]
        where = "--input"
    _check_locally(settings, name, inputs, where)
    replies = asyncio.run(_start(settings, name, inputs, timeout))
    refused = [reply for reply in replies if reply.error is not None]
    if refused:
        assert refused[0].error is not None
        raise SagaError(refused[0].error.message)
    if inputs_file is not None:
        if as_json:
            _echo_json([{"id": r.saga_id, "created": r.created} for r in replies])
        else:
            for reply in replies:
                click.echo(reply.saga_id)
        return
    reply = replies[0]
    assert reply.saga_id is not None
    if not wait:
        if as_json:
            _echo_json({"id": reply.saga_id, "created": reply.created})
        else:
            click.echo(reply.saga_id)
        return
    record = asyncio.run(_wait(settings, reply.saga_id, timeout))
    if record is None:
        click.echo(f"saga {reply.saga_id} did not end within {timeout:g}s", err=True)
        sys.exit(EXIT_WAIT_TIMEOUT)
    _show_status(record, as_json)
    if record.state.status is not SagaStatus.COMPLETED:
        sys.exit(EXIT_NOT_COMPLETED)


async def _start(
    settings: Settings,
    name: str,
    inputs: list[tuple[dict[str, Any], str | None]],
    wait_seconds: float,
) -> list[StartReply]:
    transport = AmqpTransport(settings.amqp_url, name="saga-cli")
    await transport.connect()
    try:
        # Declared here too, so a request waits in the queue when no orchestrator ever ran.
        await transport.declare(Topology(queues=tuple(orchestrator_queues())))
        client = StartClient(transport)
        try:
            return await client.start_many(name, inputs, wait_seconds=wait_seconds)
        except SagaError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_NO_ORCHESTRATOR)
    finally:
        await transport.close()


async def _wait(settings: Settings, saga_id: str, wait_seconds: float) -> SagaRecord | None:
    async def poll(store: SqlStore) -> SagaRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        delay = 0.05
        while True:
            record = await store.get(saga_id)
            if record is not None and record.state.status.terminal:
                return record
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    return await _with_store(settings, poll)


# -- reads ----------------------------------------------------------------------


def _show_status(record: SagaRecord, as_json: bool) -> None:
    if as_json:
        _echo_json(status_json(record))
    else:
        print_status(record)


@click.command()
@click.argument("saga_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(saga_id: str, as_json: bool) -> None:
    """Show one saga: its state, steps, output or error."""
    record = asyncio.run(_with_store(_settings(), lambda store: store.get(saga_id)))
    if record is None:
        raise UsageError(f"no saga with id {saga_id}")
    _show_status(record, as_json)


@click.command("list")
@click.option("--state", type=click.Choice([s.value for s in SagaStatus]), help="Only this state.")
@click.option("--name", help="Only sagas of this definition.")
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    help="Only sagas on this version of their definition (with --name: of that one).",
)
@click.option(
    "--limit", type=click.IntRange(min=0), default=100, show_default=True, help="0 for all."
)
@click.option(
    "--stuck",
    is_flag=True,
    help="Only running or compensating sagas idle for longer than their step may wait.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_sagas(
    state: str | None,
    name: str | None,
    version: int | None,
    limit: int,
    stuck: bool,
    as_json: bool,
) -> None:
    """List sagas, newest first."""
    wanted = SagaStatus(state) if state else None
    if stuck:
        if wanted is not None:
            raise click.UsageError("--stuck already means running or compensating; drop --state")
        if version is not None:
            raise click.UsageError("--stuck lists every version; drop --version")
        found = asyncio.run(_with_store(_settings(), lambda store: _stuck(store, name, limit)))
        if as_json:
            _echo_json(stuck_json(found))
        else:
            print_stuck(found)
        return
    sagas = asyncio.run(
        _with_store(
            _settings(),
            lambda store: store.list_sagas(state=wanted, name=name, limit=limit, version=version),
        )
    )
    if as_json:
        _echo_json(list_json(sagas))
    else:
        print_list(sagas)


async def _stuck(store: SqlStore, name: str | None, limit: int) -> list[Stuck]:
    now = utc_now()
    candidates = []
    for state in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
        for summary in await store.list_sagas(state=state, name=name, limit=0):
            if now - summary.updated_at > STUCK_GRACE:  # cheap filter before loading
                record = await store.get(summary.id)
                if record is not None:
                    candidates.append(record)
    found = find_stuck(candidates, now)
    found.sort(key=lambda item: item.record.created_at, reverse=True)
    return found[:limit] if limit else found


@click.command()
@click.argument("saga_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def history(saga_id: str, as_json: bool) -> None:
    """Show a saga's event log, oldest first."""

    async def read(store: SqlStore) -> Any:
        if await store.get(saga_id) is None:
            raise UsageError(f"no saga with id {saga_id}")
        return await store.history(saga_id)

    entries = asyncio.run(_with_store(_settings(), read))
    if as_json:
        _echo_json(history_json(entries))
    else:
        print_history(entries)


@click.command()
@click.argument("saga_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trace(saga_id: str, as_json: bool) -> None:
    """Show a saga's timeline: every attempt of every step and compensation, with durations."""

    async def read(store: SqlStore) -> tuple[SagaRecord, list[HistoryEntry]]:
        record = await store.get(saga_id)
        if record is None:
            raise UsageError(f"no saga with id {saga_id}")
        return record, await store.history(saga_id)

    record, entries = asyncio.run(_with_store(_settings(), read))
    found = spans(entries)
    if as_json:
        _echo_json(
            {
                "id": saga_id,
                "state": record.state.status.value,
                "spans": [s.to_json() for s in found],
            }
        )
    else:
        print_trace(record, entries, found)
