"""How sagas are shown: the JSON shapes of ``saga status/list/history --json`` (PRODUCT.md)
and their human renderings. Secret input fields are redacted here, on the way out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.tree import Tree

from orchestrator.core.state import JSON, ErrorInfo, StepState
from orchestrator.definitions.schema import redact, secret_paths
from orchestrator.store import HistoryEntry, SagaRecord, SagaSummary

if TYPE_CHECKING:
    from orchestrator.operations import Stuck
    from orchestrator.timeline import Span


def iso(value: datetime) -> str:
    """ISO 8601 with the UTC offset."""
    return value.isoformat()


def _error(error: ErrorInfo | None) -> JSON:
    return None if error is None else error.to_json()


def _step(step: StepState) -> dict[str, JSON]:
    compensation = step.compensation
    return {
        "name": step.name,
        "state": step.status.value,
        "attempts": step.attempts,
        "result": step.result,
        "error": _error(step.error),
        "compensation": None
        if compensation is None
        else {
            "state": compensation.status.value,
            "attempts": compensation.attempts,
            "result": compensation.result,
            "error": _error(compensation.error),
        },
    }


def status_json(record: SagaRecord) -> dict[str, JSON]:
    """``saga status --json``."""
    state = record.state
    return {
        "id": state.saga_id,
        "name": state.definition.name,
        "version": state.definition.version,
        "state": state.status.value,
        "input": redact(state.input, secret_paths(state.definition)),
        "output": state.output,
        "error": _error(state.error),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "steps": [_step(step) for step in state.steps],
    }


def list_json(sagas: Sequence[SagaSummary]) -> list[dict[str, JSON]]:
    """``saga list --json``."""
    return [
        {
            "id": saga.id,
            "name": saga.name,
            "version": saga.version,
            "state": saga.state.value,
            "created_at": iso(saga.created_at),
            "updated_at": iso(saga.updated_at),
        }
        for saga in sagas
    ]


def history_json(entries: Sequence[HistoryEntry]) -> list[dict[str, JSON]]:
    """``saga history --json``."""
    return [
        {
            "seq": entry.seq,
            "at": iso(entry.at),
            "type": entry.type,
            "step": entry.step,
            "attempt": entry.attempt,
            "detail": entry.detail,
        }
        for entry in entries
    ]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def print_status(record: SagaRecord) -> None:
    """``saga status`` for people."""
    data = status_json(record)
    click.echo(f"{data['id']}  {data['name']} v{data['version']}  {data['state']}")
    click.echo(
        f"  created {_short_time(data['created_at'])}  updated {_short_time(data['updated_at'])}"
    )
    click.echo(f"  input   {_compact(data['input'])}")
    if data["output"] is not None:
        click.echo(f"  output  {_compact(data['output'])}")
    if data["error"] is not None:
        click.echo(f"  error   {_describe_error(data['error'])}")
    width = max(len(step["name"]) for step in data["steps"])
    click.echo("  steps")
    for step in data["steps"]:
        if step["error"] is not None:
            outcome = _describe_error(step["error"])
        else:
            outcome = "" if step["result"] is None else _compact(step["result"])
        click.echo(
            f"    {step['name']:<{width}}  {step['state']:<12}  "
            f"{_attempts(step['attempts']):<11} {outcome}".rstrip()
        )
        compensation = step["compensation"]
        if compensation is not None:
            error = compensation["error"]
            detail = _describe_error(error) if error is not None else ""
            click.echo(
                f"    {'':<{width}}  compensation {compensation['state']}, "
                f"{_attempts(compensation['attempts'])} {detail}".rstrip()
            )


def _attempts(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def _describe_error(error: dict[str, JSON]) -> str:
    return f"{error.get('code')}: {error.get('message')}"


def print_list(sagas: Sequence[SagaSummary]) -> None:
    """``saga list`` for people: one saga per line, full ids (they are meant to be copied)."""
    rows = list_json(sagas)
    if not rows:
        click.echo("no sagas")
        return
    name_width = max(len("name"), *(len(f"{row['name']} v{row['version']}") for row in rows))
    click.echo(f"{'id':<36}  {'name':<{name_width}}  {'state':<12}  {'created':<19}  updated")
    for row in rows:
        name = f"{row['name']} v{row['version']}"
        click.echo(
            f"{row['id']:<36}  {name:<{name_width}}  {row['state']:<12}  "
            f"{_short_time(row['created_at'])}  {_short_time(row['updated_at'])}"
        )


def _short_time(value: str) -> str:
    return value[:19].replace("T", " ")


def print_history(entries: Sequence[HistoryEntry]) -> None:
    """``saga history`` for people: one line per event, with the time since the start."""
    if not entries:
        return
    began = entries[0].at
    for entry in entries:
        elapsed = (entry.at - began).total_seconds()
        where = entry.step or ""
        if entry.attempt is not None:
            where += f" #{entry.attempt}"
        detail = _compact(entry.detail) if entry.detail else ""
        click.echo(
            f"{entry.seq:>4}  {_short_time(iso(entry.at))}  +{elapsed:7.3f}s  "
            f"{entry.type:<23} {where:<22} {detail}".rstrip()
        )


def stuck_json(found: Sequence[Stuck]) -> list[dict[str, JSON]]:
    """``saga list --stuck --json``: the list rows plus the step waited on and idle time."""
    rows = []
    for item in found:
        summary = item.record
        rows.append(
            {
                "id": summary.state.saga_id,
                "name": summary.state.definition.name,
                "version": summary.state.definition.version,
                "state": summary.state.status.value,
                "created_at": iso(summary.created_at),
                "updated_at": iso(summary.updated_at),
                "waiting_on": item.waiting_on,
                "idle_seconds": round(item.idle.total_seconds(), 1),
                "allowed_seconds": round(item.allowed.total_seconds(), 1),
            }
        )
    return rows


def print_stuck(found: Sequence[Stuck]) -> None:
    """``saga list --stuck`` for people."""
    if not found:
        click.echo("no stuck sagas")
        return
    click.echo(f"{'id':<36}  {'name':<24}  {'state':<12}  {'waiting on':<20}  idle")
    for row in stuck_json(found):
        name = f"{row['name']} v{row['version']}"
        click.echo(
            f"{row['id']:<36}  {name:<24}  {row['state']:<12}  {row['waiting_on'] or '':<20}  "
            f"{row['idle_seconds']:.0f}s (allowed {row['allowed_seconds']:.0f}s)"
        )


BAR_WIDTH = 30


def print_trace(record: SagaRecord, history: Sequence[HistoryEntry], found: Sequence[Span]) -> None:
    """``saga trace`` for people: a tree of attempts with a bar on the saga's time axis."""
    state = record.state
    began = history[0].at if history else record.created_at
    moves = [entry for entry in history if entry.type != "reply_ignored"]
    ended = moves[-1].at if moves else record.updated_at
    total = max((ended - began).total_seconds(), 1e-6)
    tree = Tree(
        f"[bold]saga {state.definition.name} v{state.definition.version}[/bold] "
        f"{state.saga_id}  [bold]{state.status.value}[/bold]  {total * 1000:.1f} ms"
    )
    for span in found:
        end = span.ended_at or ended
        start_col = int((span.started_at - began).total_seconds() / total * BAR_WIDTH)
        length = max(1, int((end - span.started_at).total_seconds() / total * BAR_WIDTH))
        bar = " " * min(start_col, BAR_WIDTH - 1) + "█" * min(length, BAR_WIDTH - start_col)
        duration = "" if span.duration_ms is None else f"{span.duration_ms:.1f} ms"
        colour = {"succeeded": "green", "failed": "red", "timed out": "yellow"}.get(
            span.outcome, "cyan"
        )
        label = f"{span.step} {span.kind} #{span.attempt}"
        detail = f"  {span.detail}" if span.detail else ""
        tree.add(
            f"{label:<36} [{colour}]{span.outcome:<10}[/{colour}] {duration:>10}  "
            f"[{colour}]{bar:<{BAR_WIDTH}}[/{colour}]{detail}"
        )
    Console(width=160, soft_wrap=True).print(tree)
