"""The SQL store's pure parts: row mapping, datetimes, URLs, error translation."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlalchemy.exc as sa_exc
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Dialect

from orchestrator.core.effects import Record
from orchestrator.core.state import (
    CompensationState,
    CompensationStatus,
    Deadline,
    DeadlinePurpose,
    ErrorInfo,
    HistoryType,
    Kind,
    SagaState,
    StepState,
    StepStatus,
)
from orchestrator.definitions.model import SagaDefinition
from orchestrator.store import (
    OutboxMessage,
    SchemaNotReady,
    StaleVersion,
    StoreError,
    StoreUnavailable,
)
from orchestrator.stores import mapping, postgres
from orchestrator.stores.engine import mask_url, parse_url
from orchestrator.stores.errors import BadDatabaseUrl, InvalidValue, translate
from orchestrator.stores.tables import UtcDateTime
from orchestrator.stores.unit_of_work import DefinitionCache

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
errors = st.none() | st.builds(
    ErrorInfo, st.text(), st.text(), st.booleans(), st.none() | st.text()
)
aware = st.datetimes(timezones=st.just(UTC))
deadlines = st.none() | st.builds(
    Deadline, aware, st.sampled_from(Kind), st.sampled_from(DeadlinePurpose)
)
compensations = st.none() | st.builds(
    CompensationState,
    st.sampled_from(CompensationStatus),
    st.integers(0, 100),
    json_values,
    errors,
    st.integers(0, 10),
)
step_states = st.builds(
    StepState,
    st.text(min_size=1),
    st.sampled_from(StepStatus),
    st.integers(0, 1000),
    json_values,
    errors,
    st.booleans(),
    st.integers(0, 10),
    deadlines,
    compensations,
)


@given(step_states, st.integers(0, 99))
def test_a_step_round_trips_through_its_row(step: StepState, index: int) -> None:
    row = mapping.step_row("saga-1", index, step)
    assert (row["saga_id"], row["step_index"]) == ("saga-1", index)
    assert mapping.step_from_row(row) == step


@given(errors)
def test_an_error_round_trips_with_every_field(error: ErrorInfo | None) -> None:
    assert mapping.error_from_json(mapping.error_to_json(error)) == error


def _definition() -> SagaDefinition:
    return SagaDefinition.model_validate(
        {
            "name": "order",
            "version": 3,
            "steps": [{"name": "a", "participant": "p", "command": "c"}],
        }
    )


def test_a_saga_round_trips_through_its_rows() -> None:
    definition = _definition()
    state = SagaState.new("saga-1", definition, {"x": 1})
    state = replace(state, output=[1], error=ErrorInfo("e", "m", retryable=True, step="a"))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = mapping.instance_row(
        state, version=1, idempotency_key="k", trace_context={"traceparent": "t"}, now=now
    )
    steps = [mapping.step_row("saga-1", i, s) for i, s in enumerate(state.steps)]
    record = mapping.saga_record(row, steps)
    assert record.state == state
    assert (record.version, record.idempotency_key, record.trace_context) == (
        1,
        "k",
        {"traceparent": "t"},
    )
    assert mapping.saga_summary(row).state is state.status


def test_history_and_outbox_rows_round_trip() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    record = Record(HistoryType.STEP_FAILED, "a", 2, {"code": "x"})
    entry = mapping.history_entry(mapping.history_row("s", 7, record, now))
    assert (entry.seq, entry.at, entry.type, entry.step, entry.attempt, entry.detail) == (
        7,
        now,
        "step_failed",
        "a",
        2,
        {"code": "x"},
    )
    message = OutboxMessage("m", "ex", "rk", b"\x00body", {"h": 1}, saga_id="s")
    row = mapping.outbox_row(message, now) | {"id": 5}
    assert mapping.outbox_message(row) == replace(message, id=5, created_at=now)


def test_a_due_timer_carries_the_attempt_of_its_kind() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    row: dict[str, Any] = {
        "saga_id": "s",
        "name": "a",
        "attempts": 2,
        "compensation_attempts": 5,
        "deadline_at": at,
        "deadline_kind": Kind.COMPENSATION,
        "deadline_purpose": DeadlinePurpose.RETRY,
    }
    assert mapping.due_timer(row).attempt == 5
    assert mapping.due_timer(row | {"deadline_kind": Kind.ACTION}).attempt == 2


def test_changed_steps_are_the_ones_that_differ() -> None:
    before = (StepState("a"), StepState("b"), StepState("c"))
    after = (before[0], replace(before[1], attempts=1), StepState("c"))
    assert mapping.changed_steps(before, after) == [(1, after[1])]
    with pytest.raises(ValueError, match="shorter"):
        mapping.changed_steps(before, after[:2])


def test_the_definition_cache_reuses_only_an_equal_snapshot() -> None:
    cache = DefinitionCache(size=1)
    snapshot = _definition().model_dump(mode="json")
    first = cache.get(snapshot)
    assert cache.get(dict(snapshot)) is first
    edited = snapshot | {"description": "changed"}
    assert cache.get(edited).description == "changed"


@pytest.mark.parametrize("name", ["sqlite", "postgresql"])
def test_datetimes_are_aware_utc_on_every_database(name: str) -> None:
    dialect = cast(Dialect, SimpleNamespace(name=name))  # the type reads only the name
    column = UtcDateTime()
    local = datetime(2026, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    stored = column.process_bind_param(local, dialect)
    assert stored is not None
    read = column.process_result_value(stored, dialect)
    assert read == local
    assert read is not None
    assert read.tzinfo is UTC
    assert (stored.tzinfo is None) == (dialect.name == "sqlite")
    with pytest.raises(ValueError, match="naive datetime"):
        column.process_bind_param(datetime(2026, 1, 1), dialect)


def test_urls_get_their_async_driver_and_lose_their_password() -> None:
    assert str(parse_url("sqlite:///x.db")) == "sqlite+aiosqlite:///x.db"
    assert parse_url("postgresql://u:p@h/d").drivername == "postgresql+asyncpg"
    assert mask_url("postgresql+asyncpg://u:s3cret@h/d") == "postgresql+asyncpg://u:***@h/d"
    with pytest.raises(BadDatabaseUrl, match="unsupported driver 'mysql'") as raised:
        parse_url("mysql://u:s3cret@h/d")
    assert "s3cret" not in str(raised.value)
    with pytest.raises(BadDatabaseUrl, match="not valid"):
        parse_url("not a url")


class _Orig(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (ConnectionRefusedError("refused"), StoreUnavailable, "cannot be reached: refused"),
        (
            sa_exc.OperationalError("SELECT", {}, _Orig("database is locked\nmore")),
            StoreUnavailable,
            "is busy: database is locked",
        ),
        (
            sa_exc.OperationalError("SELECT", {}, _Orig("unable to open database file")),
            StoreUnavailable,
            "cannot be reached: unable to open database file",
        ),
        (
            sa_exc.OperationalError("SELECT", {}, _Orig("no such table: outbox")),
            SchemaNotReady,
            "not migrated: run `saga db upgrade` (no such table: outbox)",
        ),
        (
            sa_exc.ProgrammingError("SELECT", {}, _Orig('"outbox" does not exist', "42P01")),
            SchemaNotReady,
            "not migrated",
        ),
        (
            sa_exc.DBAPIError("SELECT", {}, _Orig("terminated", "57P01")),
            StoreUnavailable,
            "terminated",
        ),
        (sa_exc.DBAPIError("SELECT", {}, _Orig("deadlock", "40P01")), StaleVersion, "again"),
        (sa_exc.DBAPIError("SELECT", {}, _Orig("lock timeout", "55P03")), StoreUnavailable, "lock"),
        (sa_exc.TimeoutError("QueuePool limit"), StoreUnavailable, "no connection came free"),
        (sa_exc.DBAPIError("SELECT", {}, _Orig("bad \\u0000", "22P05")), InvalidValue, "value"),
        (sa_exc.IntegrityError("INSERT", {}, _Orig("fk", "23503")), StoreError, "refused a write"),
        (sa_exc.ProgrammingError("SELECT", {}, _Orig("syntax", "42601")), StoreError, "failed"),
    ],
)
def test_driver_errors_become_store_errors(exc: Exception, kind: type, text: str) -> None:
    translated = translate(exc, "db")
    assert type(translated) is kind
    assert text in str(translated)
    assert "db" in str(translated)


def test_a_definitions_json_is_dumped_once_per_object_and_always_its_own() -> None:
    first, second = _definition(), _definition()
    text = postgres._definition_json(first)
    assert json.loads(text) == first.model_dump(mode="json")
    assert postgres._definition_json(first) is text
    other = postgres._definition_json(second)
    assert other == text
    assert other is not text
    for _ in range(70):  # many reloads: the cache starts afresh, and stays right
        assert json.loads(postgres._definition_json(_definition())) == json.loads(text)
    assert len(postgres._DEFINITION_TEXT) <= 64
