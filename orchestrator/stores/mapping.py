"""Rows to states and back: pure functions, no I/O, every field round-trips exactly.

A saga is one ``saga_instances`` row plus one ``saga_steps`` row per step (see
:mod:`orchestrator.stores.tables`). Errors are stored as JSON objects with all four
:class:`~orchestrator.core.state.ErrorInfo` fields (``ErrorInfo.to_json`` leaves out
``retryable``, which the state machine needs back). The definition is stored as the
snapshot the saga started on and validated again when read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator.core.effects import Record
from orchestrator.core.state import (
    JSON,
    CompensationState,
    CompensationStatus,
    Deadline,
    DeadlinePurpose,
    ErrorInfo,
    HistoryType,
    Kind,
    SagaState,
    SagaStatus,
    StepState,
    StepStatus,
)
from orchestrator.definitions.model import SagaDefinition
from orchestrator.store import DueTimer, HistoryEntry, OutboxMessage, SagaRecord, SagaSummary

__all__ = [
    "Row",
    "changed_steps",
    "due_timer",
    "error_from_json",
    "error_to_json",
    "history_entry",
    "history_row",
    "instance_row",
    "outbox_message",
    "outbox_row",
    "saga_record",
    "saga_summary",
    "step_from_row",
    "step_row",
]

Row = Mapping[Any, Any]
"""A row as read (``Row._mapping``) or as written (a dict of column values)."""


def error_to_json(error: ErrorInfo | None) -> dict[str, JSON] | None:
    """The error as stored: every field, so it reads back equal."""
    if error is None:
        return None
    return {
        "code": error.code,
        "message": error.message,
        "retryable": error.retryable,
        "step": error.step,
    }


def error_from_json(value: Mapping[str, JSON] | None) -> ErrorInfo | None:
    """The error stored by :func:`error_to_json`."""
    if value is None:
        return None
    step = value.get("step")
    return ErrorInfo(
        code=str(value["code"]),
        message=str(value["message"]),
        retryable=bool(value.get("retryable", False)),
        step=None if step is None else str(step),
    )


def instance_row(
    state: SagaState,
    *,
    version: int,
    idempotency_key: str | None,
    trace_context: dict[str, str] | None,
    now: datetime,
) -> dict[str, Any]:
    """The ``saga_instances`` row of a new saga."""
    return {
        "id": state.saga_id,
        "name": state.definition.name,
        "version": state.definition.version,
        "state": state.status,
        "definition": state.definition.model_dump(mode="json"),
        "input": state.input,
        "output": state.output,
        "error": error_to_json(state.error),
        "idempotency_key": idempotency_key,
        "lock_version": version,
        "trace_context": trace_context,
        "created_at": now,
        "updated_at": now,
        "deadline_at": state.deadline,
    }


def step_row(saga_id: str, index: int, step: StepState) -> dict[str, Any]:
    """The ``saga_steps`` row of the step at ``index``."""
    deadline = step.deadline
    compensation = step.compensation
    return {
        "saga_id": saga_id,
        "step_index": index,
        "name": step.name,
        "status": step.status,
        "attempts": step.attempts,
        "result": step.result,
        "error": error_to_json(step.error),
        "effect_possible": step.effect_possible,
        "generation": step.generation,
        "deadline_at": deadline.at if deadline else None,
        "deadline_kind": deadline.kind if deadline else None,
        "deadline_purpose": deadline.purpose if deadline else None,
        "compensation_status": compensation.status if compensation else None,
        "compensation_attempts": compensation.attempts if compensation else 0,
        "compensation_result": compensation.result if compensation else None,
        "compensation_error": error_to_json(compensation.error) if compensation else None,
        "compensation_generation": compensation.generation if compensation else 0,
        "finished_seq": step.finished,
        "key_name": step.key_name,
    }


def step_from_row(row: Row) -> StepState:
    """The step stored by :func:`step_row`."""
    deadline = None
    if row["deadline_at"] is not None:
        deadline = Deadline(
            at=row["deadline_at"],
            kind=Kind(row["deadline_kind"]),
            purpose=DeadlinePurpose(row["deadline_purpose"]),
        )
    compensation = None
    if row["compensation_status"] is not None:
        compensation = CompensationState(
            status=CompensationStatus(row["compensation_status"]),
            attempts=row["compensation_attempts"],
            result=row["compensation_result"],
            error=error_from_json(row["compensation_error"]),
            generation=row["compensation_generation"],
        )
    return StepState(
        name=row["name"],
        status=StepStatus(row["status"]),
        attempts=row["attempts"],
        result=row["result"],
        error=error_from_json(row["error"]),
        effect_possible=bool(row["effect_possible"]),
        generation=row["generation"],
        deadline=deadline,
        compensation=compensation,
        finished=row["finished_seq"],
        key_name=row["key_name"],
    )


def saga_record(
    instance: Row, step_rows: Iterable[Row], *, definition: SagaDefinition | None = None
) -> SagaRecord:
    """The saga stored in ``instance`` and its step rows (ordered by ``step_index``).

    ``definition`` skips validating the stored snapshot again when the caller already
    holds an equal one.
    """
    if definition is None:
        definition = SagaDefinition.model_validate(instance["definition"])
    state = SagaState(
        saga_id=instance["id"],
        definition=definition,
        status=SagaStatus(instance["state"]),
        input=instance["input"],
        steps=tuple(step_from_row(row) for row in step_rows),
        output=instance["output"],
        error=error_from_json(instance["error"]),
        deadline=instance["deadline_at"],
    )
    return SagaRecord(
        state=state,
        version=instance["lock_version"],
        idempotency_key=instance["idempotency_key"],
        trace_context=instance["trace_context"],
        created_at=instance["created_at"],
        updated_at=instance["updated_at"],
    )


def saga_summary(row: Row) -> SagaSummary:
    """One ``saga list`` line from an instance row."""
    return SagaSummary(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        state=SagaStatus(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def history_row(saga_id: str, seq: int, record: Record, now: datetime) -> dict[str, Any]:
    """The ``saga_history`` row of one recorded event."""
    return {
        "saga_id": saga_id,
        "seq": seq,
        "at": now,
        "type": record.type,
        "step": record.step,
        "attempt": record.attempt,
        "detail": dict(record.detail),
    }


def history_entry(row: Row) -> HistoryEntry:
    """The event stored by :func:`history_row`."""
    return HistoryEntry(
        seq=row["seq"],
        at=row["at"],
        type=HistoryType(row["type"]).value,
        step=row["step"],
        attempt=row["attempt"],
        detail=row["detail"],
    )


def outbox_row(message: OutboxMessage, now: datetime) -> dict[str, Any]:
    """The ``outbox`` row of a message to publish (the id is the database's)."""
    return {
        "message_id": message.message_id,
        "saga_id": message.saga_id,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "body": message.body,
        "headers": dict(message.headers),
        "content_type": message.content_type,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "type": message.type,
        "created_at": now,
        "sent_at": None,
    }


def outbox_message(row: Row) -> OutboxMessage:
    """The message stored by :func:`outbox_row`, with its row id."""
    return OutboxMessage(
        message_id=row["message_id"],
        exchange=row["exchange"],
        routing_key=row["routing_key"],
        body=bytes(row["body"]),
        headers=row["headers"],
        content_type=row["content_type"],
        correlation_id=row["correlation_id"],
        reply_to=row["reply_to"],
        type=row["type"],
        saga_id=row["saga_id"],
        id=row["id"],
        created_at=row["created_at"],
    )


def due_timer(row: Row) -> DueTimer:
    """A claimed deadline from a step row; ``attempt`` is the attempt of the deadline's kind."""
    kind = Kind(row["deadline_kind"])
    attempt = row["attempts"] if kind is Kind.ACTION else row["compensation_attempts"]
    return DueTimer(
        saga_id=row["saga_id"],
        step=row["name"],
        kind=kind,
        attempt=attempt,
        purpose=DeadlinePurpose(row["deadline_purpose"]),
        at=row["deadline_at"],
    )


def changed_steps(
    before: Sequence[StepState], after: Sequence[StepState]
) -> list[tuple[int, StepState]]:
    """The steps of ``after`` that differ from ``before`` (same length), with their index."""
    return [
        (index, step)
        for index, (old, step) in enumerate(zip(before, after, strict=True))
        if old is not step and old != step
    ]
