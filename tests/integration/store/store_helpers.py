"""Builders shared by the store tests: definitions, states with every field set, messages,
and a log of the SQL statements an engine runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.core.state import (
    CompensationState,
    CompensationStatus,
    Deadline,
    DeadlinePurpose,
    ErrorInfo,
    Kind,
    SagaState,
    SagaStatus,
    StepStatus,
)
from orchestrator.definitions.model import SagaDefinition
from orchestrator.store import OutboxMessage

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
"""A fixed "now" with microseconds, which must survive the round trip."""


def definition(
    name: str = "order", steps: tuple[str, ...] = ("reserve", "charge", "ship")
) -> SagaDefinition:
    """A small definition; every step has a compensation."""
    return SagaDefinition.model_validate(
        {
            "name": name,
            "version": 2,
            "description": "an order",
            "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            "steps": [
                {
                    "name": step,
                    "participant": "inventory",
                    "command": step,
                    "payload": {"order": "${input.order_id}", "n": index},
                    "timeout": "2s",
                    "retry": {"max_attempts": 4, "backoff": {"initial": "250ms"}},
                    "compensation": {"command": f"undo_{step}", "payload": {"why": "undo"}},
                }
                for index, step in enumerate(steps)
            ],
            "output": {"order": "${input.order_id}"},
        }
    )


def new_id() -> str:
    """A fresh saga id."""
    return str(uuid.uuid4())


def new_state(saga_id: str | None = None, *, name: str = "order", input: Any = None) -> SagaState:
    """A saga just accepted."""
    return SagaState.new(
        saga_id or new_id(),
        definition(name),
        {"order_id": "o-1", "items": [1, 2.5, None, True]} if input is None else input,
    )


def full_state(saga_id: str | None = None) -> SagaState:
    """A compensating saga in which every stored field has a non-default value."""
    state = new_state(saga_id)
    reserve = replace(
        state.steps[0],
        status=StepStatus.COMPENSATED,
        attempts=3,
        result={"reservation": "r-9", "nested": {"list": [1, "two", {"three": 3.0}]}},
        error=ErrorInfo(code="busy", message="try later", retryable=True, step="reserve"),
        effect_possible=True,
        generation=2,
        compensation=CompensationState(
            status=CompensationStatus.SUCCEEDED,
            attempts=2,
            result="released",
            error=ErrorInfo(code="flaky", message="first try failed"),
            generation=1,
        ),
    )
    charge = replace(
        state.steps[1],
        status=StepStatus.COMPENSATING,
        attempts=1,
        result=[1, 2, 3],
        effect_possible=True,
        deadline=Deadline(
            at=T0 + timedelta(seconds=30), kind=Kind.COMPENSATION, purpose=DeadlinePurpose.RETRY
        ),
        compensation=CompensationState(status=CompensationStatus.RUNNING, attempts=1),
    )
    ship = replace(
        state.steps[2],
        status=StepStatus.FAILED,
        attempts=4,
        result=False,
        error=ErrorInfo(code="no_stock", message="out of stock", retryable=False, step="ship"),
    )
    return replace(
        state,
        status=SagaStatus.COMPENSATING,
        steps=(reserve, charge, ship),
        output={"partial": True},
        error=ErrorInfo(code="no_stock", message="out of stock", step="ship"),
    )


def running_step(state: SagaState, index: int, at: datetime, kind: Kind = Kind.ACTION) -> SagaState:
    """The state with step ``index`` sent and waiting for a reply until ``at``."""
    step = state.steps[index]
    if kind is Kind.ACTION:
        step = replace(
            step,
            status=StepStatus.RUNNING,
            attempts=step.attempts + 1,
            deadline=Deadline(at=at, kind=kind, purpose=DeadlinePurpose.REPLY),
        )
    else:
        step = replace(
            step,
            status=StepStatus.COMPENSATING,
            compensation=CompensationState(status=CompensationStatus.RUNNING, attempts=5),
            deadline=Deadline(at=at, kind=kind, purpose=DeadlinePurpose.RETRY),
        )
    return state.with_step(index, step)


def message(index: int, saga_id: str | None = None) -> OutboxMessage:
    """An outbox message with every field set."""
    return OutboxMessage(
        message_id=f"m-{index}-{uuid.uuid4()}",
        exchange="saga.commands",
        routing_key=f"inventory.reserve.{index}",
        body=b'{"index": %d, "bytes": "\x00\xff"}' % index,
        headers={"x-saga-id": saga_id, "x-attempt": index, "nested": {"a": [1, None]}},
        content_type="application/json",
        correlation_id=f"c-{index}",
        reply_to="saga.replies",
        type="command",
        saga_id=saga_id,
    )


@dataclass
class Statement:
    """One statement as the driver got it."""

    sql: str
    executemany: bool
    rows: int


@dataclass
class StatementLog:
    """The statements run while :func:`statements` is active."""

    statements: list[Statement] = field(default_factory=list)

    def matching(self, prefix: str) -> list[Statement]:
        """The statements starting with ``prefix`` (case-insensitive, whitespace-normalised)."""
        return [s for s in self.statements if " ".join(s.sql.split()).upper().startswith(prefix)]

    def clear(self) -> None:
        """Forget what was logged so far."""
        self.statements.clear()


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[StatementLog]:
    """Log every statement ``engine`` sends to the database (round trips, roughly)."""
    log = StatementLog()

    def record(
        _conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, executemany: bool
    ) -> None:
        rows = len(params) if executemany and isinstance(params, list | tuple) else 1
        log.statements.append(Statement(sql=sql, executemany=executemany, rows=rows))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield log
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
