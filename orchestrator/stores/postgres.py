"""PostgreSQL's short paths for the two hottest writes: one statement each, no transaction
block around it (so no ``BEGIN``/``COMMIT`` round trips either).

- :func:`snapshot` reads a saga, its steps, its last history seq and whether a message was
  handled, in one statement (one snapshot, so they agree with each other).
- :func:`apply` writes a transition as one statement of data-modifying CTEs: the saga row
  is updated only if it is still at the version that was read *and* the message is not in
  the inbox; the inbox row, the changed steps, the history and the outbox rows are all
  written from that update's ``RETURNING``, so either everything happens or nothing does.
  A second copy of the same message, or any other writer, bumps the version first (every
  write of a saga does), and the loser's update matches no row. Under READ COMMITTED the
  loser waits for the winner's row lock and then re-checks the version on the new row.
- :func:`create` inserts a keyed saga with its steps, history, outbox and inbox row in one
  statement, unless the key (or id) is taken or the message was handled; then it writes
  nothing and the caller's transaction decides (an existing saga, a duplicate message).

Values go in as arrays (``unnest``), so each statement has one text, prepared once per
connection, whatever the number of steps, events and messages. The statements are built
from this module's constant table and column names (hence the S608 waivers); every value
is bound.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.core.effects import Record
from orchestrator.core.state import StepState
from orchestrator.definitions.model import SagaDefinition
from orchestrator.store import NewSaga, OutboxMessage, SagaRecord, Snapshot, Transition
from orchestrator.stores import mapping
from orchestrator.stores.tables import history, instances, processed_messages, steps

__all__ = [
    "apply",
    "can_apply",
    "create",
    "snapshot_from_rows",
    "snapshot_statement",
    "step_rows",
]

# Each column a CTE writes from an array, with the array's element type; JSON values travel
# as text and are cast, so the driver's JSON codec plays no part.
_STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("step_index", "int"),
    ("name", "text"),
    ("status", "text"),
    ("attempts", "int"),
    ("result", "jsonb"),
    ("error", "jsonb"),
    ("effect_possible", "bool"),
    ("generation", "int"),
    ("deadline_at", "timestamptz"),
    ("deadline_kind", "text"),
    ("deadline_purpose", "text"),
    ("compensation_status", "text"),
    ("compensation_attempts", "int"),
    ("compensation_result", "jsonb"),
    ("compensation_error", "jsonb"),
    ("compensation_generation", "int"),
    ("finished_seq", "int"),
    ("key_name", "text"),
)
_HISTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "int"),
    ("type", "text"),
    ("step", "text"),
    ("attempt", "int"),
    ("detail", "jsonb"),
)
_OUTBOX_COLUMNS: tuple[tuple[str, str], ...] = (
    ("message_id", "text"),
    ("saga_id", "text"),
    ("exchange", "text"),
    ("routing_key", "text"),
    ("body", "bytea"),
    ("headers", "jsonb"),
    ("content_type", "text"),
    ("correlation_id", "text"),
    ("reply_to", "text"),
    ("type", "text"),
)


def _unnest(prefix: str, columns: Sequence[tuple[str, str]]) -> str:
    """``unnest(CAST(:p_a AS int[]), ...) AS v(a, ...)``; jsonb columns arrive as text[]."""
    arrays = ", ".join(
        f"CAST(:{prefix}_{name} AS {'text' if kind == 'jsonb' else kind}[])"
        for name, kind in columns
    )
    names = ", ".join(name for name, _ in columns)
    return f"unnest({arrays}) AS v({names})"


def _value(name: str, kind: str) -> str:
    return f"CAST(v.{name} AS jsonb)" if kind == "jsonb" else f"v.{name}"


def _writes(source: str) -> str:
    """The history and outbox CTEs, each writing only if ``source`` returned the saga's id."""
    history_values = ", ".join(_value(name, kind) for name, kind in _HISTORY_COLUMNS)
    outbox_names = ", ".join(name for name, _ in _OUTBOX_COLUMNS)
    outbox_values = ", ".join(_value(name, kind) for name, kind in _OUTBOX_COLUMNS)
    return f"""
history_rows AS (
    INSERT INTO {history.name} (saga_id, at, {", ".join(n for n, _ in _HISTORY_COLUMNS)})
    SELECT {source}.id, CAST(:now AS timestamptz), {history_values}
    FROM {source}, {_unnest("h", _HISTORY_COLUMNS)}
),
outbox_rows AS (
    INSERT INTO outbox ({outbox_names}, created_at)
    SELECT {outbox_values}, CAST(:now AS timestamptz)
    FROM {source}, {_unnest("o", _OUTBOX_COLUMNS)}
    RETURNING id, message_id
),
inbox_row AS (
    INSERT INTO {processed_messages.name} (consumer, message_id, processed_at)
    SELECT CAST(:consumer AS text), CAST(:message_id AS text), CAST(:now AS timestamptz)
    FROM {source}
)
SELECT {source}.id, outbox_rows.message_id, outbox_rows.id FROM {source}
LEFT JOIN outbox_rows ON true"""  # noqa: S608


_NOT_HANDLED = (
    f"NOT EXISTS (SELECT 1 FROM {processed_messages.name}"  # noqa: S608 (constant names)
    " WHERE consumer = CAST(:consumer AS text) AND message_id = CAST(:message_id AS text))"
)

_APPLY = sa.text(
    f"""
WITH saga AS (
    UPDATE {instances.name}
    SET state = CAST(:state AS text),
        output = CAST(:output AS jsonb),
        error = CAST(:error AS jsonb),
        deadline_at = CAST(:deadline_at AS timestamptz),
        lock_version = CAST(:version AS int) + 1,
        updated_at = CASE WHEN CAST(:changed AS bool) THEN CAST(:now AS timestamptz)
                          ELSE updated_at END
    WHERE id = CAST(:saga_id AS text) AND lock_version = CAST(:version AS int)
      AND {_NOT_HANDLED}
    RETURNING id
),
step_rows AS (
    UPDATE {steps.name} AS s
    SET {", ".join(f"{n} = {_value(n, k)}" for n, k in _STEP_COLUMNS if n != "step_index")}
    FROM saga, {_unnest("s", _STEP_COLUMNS)}
    WHERE s.saga_id = saga.id AND s.step_index = v.step_index
),{_writes("saga")}
"""  # noqa: S608
)

_CREATE = sa.text(
    f"""
WITH saga AS (
    INSERT INTO {instances.name} (id, name, version, state, definition, input, output, error,
                                  idempotency_key, lock_version, trace_context, created_at,
                                  updated_at, deadline_at)
    SELECT CAST(:saga_id AS text), CAST(:name AS text), CAST(:definition_version AS int),
           CAST(:state AS text), CAST(:definition AS jsonb), CAST(:input AS jsonb),
           CAST(:output AS jsonb), CAST(:error AS jsonb), CAST(:idempotency_key AS text), 1,
           CAST(:trace_context AS jsonb), CAST(:now AS timestamptz), CAST(:now AS timestamptz),
           CAST(:deadline_at AS timestamptz)
    WHERE {_NOT_HANDLED}
    ON CONFLICT DO NOTHING
    RETURNING id
),
step_rows AS (
    INSERT INTO {steps.name} (saga_id, {", ".join(n for n, _ in _STEP_COLUMNS)})
    SELECT saga.id, {", ".join(_value(n, k) for n, k in _STEP_COLUMNS)}
    FROM saga, {_unnest("s", _STEP_COLUMNS)}
),{_writes("saga")}
"""  # noqa: S608
)


def _json(value: Any) -> str | None:
    # SQL NULL for None, as the tables' JSON columns store it (none_as_null).
    return None if value is None else json.dumps(value)


_DEFINITION_TEXT: dict[int, tuple[SagaDefinition, str]] = {}
"""Definitions' JSON by object id (each entry holds its definition, so the id stays its own):
every saga started from a definition stores the same snapshot, dumped once."""


def _definition_json(definition: SagaDefinition) -> str:
    entry = _DEFINITION_TEXT.get(id(definition))
    if entry is not None and entry[0] is definition:
        return entry[1]
    text = json.dumps(definition.model_dump(mode="json"))
    if len(_DEFINITION_TEXT) >= 64:  # definitions reloaded many times: start afresh
        _DEFINITION_TEXT.clear()
    _DEFINITION_TEXT[id(definition)] = (definition, text)
    return text


def _columns(
    prefix: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]
) -> dict[str, list[Any]]:
    """Rows turned into one array per column, named ``prefix_column``."""
    return {
        f"{prefix}_{name}": [_json(row[name]) if kind == "jsonb" else row[name] for row in rows]
        for name, kind in columns
    }


def _steps(saga_id: str, changed: Sequence[tuple[int, StepState]]) -> dict[str, list[Any]]:
    rows = [mapping.step_row(saga_id, index, step) for index, step in changed]
    return _columns("s", rows, _STEP_COLUMNS)


def _history_and_outbox(
    saga_id: str,
    last_seq: int,
    records: Sequence[Record],
    outbox: Sequence[OutboxMessage],
    now: datetime,
) -> dict[str, list[Any]]:
    # The rows' own times are left out: the statement binds :now once for all of them.
    history_rows = [
        mapping.history_row(saga_id, last_seq + offset, record, now)
        for offset, record in enumerate(records, start=1)
    ]
    outbox_rows = [mapping.outbox_row(message, now) for message in outbox]
    history_columns = _columns("h", history_rows, _HISTORY_COLUMNS)
    return history_columns | _columns("o", outbox_rows, _OUTBOX_COLUMNS)


def _outbox_ids(result: sa.CursorResult[Any], outbox: Sequence[OutboxMessage]) -> list[int] | None:
    """The new outbox row ids in ``outbox`` order; None if nothing was written."""
    rows: list[tuple[Any, ...]] = [tuple(row) for row in result]
    if not rows:
        return None
    ids = {row[1]: int(row[2]) for row in rows if row[1] is not None}
    return [ids[message.message_id] for message in outbox]


def can_apply(transition: Transition) -> bool:
    """Whether :func:`apply` can write this transition (it does not change a saga's input or
    definition, which only the general path writes)."""
    before, after = transition.before.state, transition.after
    return (
        transition.inbox is not None
        and transition.last_seq is not None
        and (before.definition is after.definition or before.definition == after.definition)
        and (before.input is after.input or before.input == after.input)
        and len(before.steps) == len(after.steps)
    )


async def apply(connection: AsyncConnection, transition: Transition) -> list[int] | None:
    """Write ``transition`` (see the module docstring); None if it matched no saga row
    (moved on, or the message was handled): the caller reads again to learn which."""
    assert transition.inbox is not None
    assert transition.last_seq is not None
    before, after = transition.before, transition.after
    saga_id = after.saga_id
    changed = before.state is not after and before.state != after
    consumer, message_id = transition.inbox
    params: dict[str, Any] = {
        "saga_id": saga_id,
        "version": before.version,
        "state": after.status.value,
        "output": _json(after.output),
        "error": _json(mapping.error_to_json(after.error)),
        "deadline_at": after.deadline,
        "changed": changed,
        "now": transition.now,
        "consumer": consumer,
        "message_id": message_id,
    }
    params |= _steps(saga_id, mapping.changed_steps(before.state.steps, after.steps))
    params |= _history_and_outbox(
        saga_id, transition.last_seq, transition.history, transition.outbox, transition.now
    )
    return _outbox_ids(await connection.execute(_APPLY, params), transition.outbox)


async def create(connection: AsyncConnection, saga: NewSaga) -> list[int] | None:
    """Insert ``saga`` (see the module docstring); None if it wrote nothing."""
    state = saga.state
    consumer, message_id = saga.inbox
    params: dict[str, Any] = {
        "saga_id": state.saga_id,
        "name": state.definition.name,
        "definition_version": state.definition.version,
        "state": state.status.value,
        "definition": _definition_json(state.definition),
        "input": _json(state.input),
        "output": _json(state.output),
        "error": _json(mapping.error_to_json(state.error)),
        "deadline_at": state.deadline,
        "idempotency_key": saga.idempotency_key,
        "trace_context": _json(saga.trace_context),
        "now": saga.now,
        "consumer": consumer,
        "message_id": message_id,
    }
    params |= _steps(state.saga_id, list(enumerate(state.steps)))
    params |= _history_and_outbox(state.saga_id, 0, saga.history, saga.outbox, saga.now)
    return _outbox_ids(await connection.execute(_CREATE, params), saga.outbox)


_STEP_LABELS = tuple(
    column.label(f"step_{column.name}") for column in steps.columns if column.name != "saga_id"
)


def snapshot_statement() -> sa.Select[Any]:
    """One saga's row joined to its step rows, with its last history seq and whether the
    message ``:consumer``/``:message_id`` was handled (bound when executed)."""
    last_seq = (
        sa.select(history.c.seq)
        .where(history.c.saga_id == instances.c.id)
        .order_by(history.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    handled = sa.exists().where(
        processed_messages.c.consumer == sa.bindparam("consumer"),
        processed_messages.c.message_id == sa.bindparam("message_id"),
    )
    return (
        sa.select(instances, *_STEP_LABELS, last_seq.label("last_seq"), handled.label("handled"))
        .select_from(instances.outerjoin(steps, steps.c.saga_id == instances.c.id))
        .where(instances.c.id == sa.bindparam("saga_id"))
        .order_by(steps.c.step_index)
    )


def snapshot_from_rows(rows: Sequence[sa.RowMapping], record: SagaRecord | None) -> Snapshot:
    """The snapshot read by :func:`snapshot_statement`; ``record`` is made by the caller
    from the rows (it holds the definition cache)."""
    if not rows:
        return Snapshot(record=None, last_seq=0, processed=False)
    first = rows[0]
    last_seq = first["last_seq"] or 0
    return Snapshot(record=record, last_seq=last_seq, processed=bool(first["handled"]))


def step_rows(rows: Sequence[sa.RowMapping]) -> list[dict[str, Any]]:
    """The step rows inside the rows of :func:`snapshot_statement` (none if the saga has none)."""
    if not rows or rows[0]["step_step_index"] is None:
        return []
    names = [label.name for label in _STEP_LABELS]
    return [{name[len("step_") :]: row[name] for name in names} for row in rows]
