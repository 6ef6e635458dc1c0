"""How sagas are shown: the JSON shapes of ``saga status/list/history --json`` (PRODUCT.md)
and their human renderings. Secret input fields are redacted here, on the way out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.core.state import JSON, ErrorInfo, StepState
from orchestrator.definitions.schema import redact, secret_paths
from orchestrator.store import HistoryEntry, SagaRecord, SagaSummary


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


def print_status(console: Console, record: SagaRecord) -> None:
    """``saga status`` for people."""
    data = status_json(record)
    console.print(
        f"[bold]{data['id']}[/bold]  {data['name']} v{data['version']}  "
        f"[bold]{data['state']}[/bold]"
    )
    console.print(f"created {data['created_at']}  updated {data['updated_at']}")
    console.print(f"input   {_compact(data['input'])}")
    if data["output"] is not None:
        console.print(f"output  {_compact(data['output'])}")
    if data["error"] is not None:
        console.print(f"error   {_compact(data['error'])}")
    table = Table("step", "state", "attempts", "result / error", "compensation")
    for step in data["steps"]:
        outcome = step["error"] if step["error"] is not None else step["result"]
        compensation = step["compensation"]
        comp = (
            ""
            if compensation is None
            else f"{compensation['state']} ({compensation['attempts']} attempts)"
        )
        table.add_row(
            step["name"],
            step["state"],
            str(step["attempts"]),
            "" if outcome is None else _compact(outcome),
            comp,
        )
    console.print(table)


def print_list(console: Console, sagas: Sequence[SagaSummary]) -> None:
    """``saga list`` for people."""
    table = Table("id", "name", "version", "state", "created", "updated")
    for row in list_json(sagas):
        table.add_row(
            row["id"],
            row["name"],
            str(row["version"]),
            row["state"],
            row["created_at"],
            row["updated_at"],
        )
    console.print(table)


def print_history(console: Console, entries: Sequence[HistoryEntry]) -> None:
    """``saga history`` for people: one line per event."""
    for row in history_json(entries):
        where = row["step"] or ""
        if row["attempt"] is not None:
            where += f" #{row['attempt']}"
        detail = _compact(row["detail"]) if row["detail"] else ""
        console.print(f"{row['seq']:>4}  {row['at']}  {row['type']:<24} {where:<24} {detail}")
