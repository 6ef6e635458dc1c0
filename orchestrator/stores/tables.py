"""The orchestrator's tables (SQLAlchemy Core), shared by the store and the Alembic migrations.

Every constraint and index has a deterministic name (the naming convention below, or an
explicit one) because Alembic needs names to alter or drop them, and SQLite's batch mode
recreates tables by name. Status columns are enums stored as their value strings, NOT NULL,
with a named CHECK constraint. Datetimes are timezone-aware UTC in Python on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from orchestrator.core.state import (
    CompensationStatus,
    DeadlinePurpose,
    HistoryType,
    Kind,
    SagaStatus,
    StepStatus,
)

__all__ = [
    "ID_LENGTH",
    "KEY_LENGTH",
    "NAMING_CONVENTION",
    "UtcDateTime",
    "history",
    "instances",
    "metadata",
    "outbox",
    "processed_messages",
    "steps",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 64
"""Longest saga id (a UUID is 36 characters)."""
KEY_LENGTH = 255
"""Longest saga name, idempotency key, consumer name and message id: these are indexed,
and PostgreSQL cannot index arbitrarily long values."""

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``; SQLite has no time zones, so the value
    is stored as naive UTC text (which sorts correctly) and made aware again when read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes (their time zone is a guess); convert to UTC."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} (use a timezone-aware UTC time)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware UTC, whatever the driver returned."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> sa.types.TypeEngine[Any]:
    # none_as_null: Python None is SQL NULL, not the JSON literal null, so "no value"
    # looks the same in every column and IS NULL works.
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _enum(cls: type[StrEnum], name: str) -> sa.Enum:
    # Stored as the value ("running"), not the member name, with a CHECK named after the
    # column; length leaves room for longer values in later migrations.
    return sa.Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [member.value for member in members],
    )


def _row_id() -> sa.types.TypeEngine[int]:
    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


instances = sa.Table(
    "saga_instances",
    metadata,
    sa.Column("id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("name", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", _enum(SagaStatus, "state"), nullable=False),
    sa.Column("definition", _json(), nullable=False),
    sa.Column("input", _json(), nullable=True),
    sa.Column("output", _json(), nullable=True),
    sa.Column("error", _json(), nullable=True),
    sa.Column("idempotency_key", sa.String(KEY_LENGTH), nullable=True),
    sa.Column("lock_version", sa.Integer, nullable=False),
    sa.Column("trace_context", _json(), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("deadline_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("name", "idempotency_key"),
    sa.CheckConstraint("lock_version >= 1", name="lock_version_positive"),
    sa.Index("ix_saga_instances_state_created_at", "state", "created_at"),
    sa.Index("ix_saga_instances_name_created_at", "name", "created_at"),
    sa.Index("ix_saga_instances_created_at", "created_at"),
    # The timer loop's query for saga deadlines; only running sagas have one.
    sa.Index(
        "ix_saga_instances_deadline_at",
        "deadline_at",
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
        sqlite_where=sa.text("deadline_at IS NOT NULL"),
    ),
)
"""One row per saga: its status, snapshot of the definition, input/output and version."""

steps = sa.Table(
    "saga_steps",
    metadata,
    sa.Column(
        "saga_id",
        sa.String(ID_LENGTH),
        sa.ForeignKey("saga_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("step_index", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("status", _enum(StepStatus, "status"), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("result", _json(), nullable=True),
    sa.Column("error", _json(), nullable=True),
    sa.Column("effect_possible", sa.Boolean, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("deadline_at", UtcDateTime(), nullable=True),
    sa.Column("deadline_kind", _enum(Kind, "deadline_kind"), nullable=True),
    sa.Column("deadline_purpose", _enum(DeadlinePurpose, "deadline_purpose"), nullable=True),
    sa.Column("compensation_status", _enum(CompensationStatus, "compensation_status")),
    sa.Column("compensation_attempts", sa.Integer, nullable=False),
    sa.Column("compensation_result", _json(), nullable=True),
    sa.Column("compensation_error", _json(), nullable=True),
    sa.Column("compensation_generation", sa.Integer, nullable=False),
    sa.Column("finished_seq", sa.Integer, nullable=True),
    sa.Column("key_name", sa.Text, nullable=True),
    sa.CheckConstraint(
        "(deadline_at IS NULL AND deadline_kind IS NULL AND deadline_purpose IS NULL)"
        " OR (deadline_at IS NOT NULL AND deadline_kind IS NOT NULL"
        " AND deadline_purpose IS NOT NULL)",
        name="deadline_complete",
    ),
    # The timer loop's query: due deadlines, oldest first; most steps have none.
    sa.Index(
        "ix_saga_steps_deadline_at",
        "deadline_at",
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
        sqlite_where=sa.text("deadline_at IS NOT NULL"),
    ),
)
"""One row per step of a saga, in definition order; the deadline columns are its timer."""

history = sa.Table(
    "saga_history",
    metadata,
    sa.Column(
        "saga_id",
        sa.String(ID_LENGTH),
        sa.ForeignKey("saga_instances.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("type", _enum(HistoryType, "type"), nullable=False),
    sa.Column("step", sa.Text, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=True),
    sa.Column("detail", _json(), nullable=False),
    sa.CheckConstraint("seq >= 1", name="seq_positive"),
)
"""A saga's event log; ``seq`` numbers each saga's events 1..n (the key is (saga_id, seq))."""

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", _row_id(), primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(KEY_LENGTH), nullable=False),
    sa.Column("saga_id", sa.String(ID_LENGTH), nullable=True),
    sa.Column("exchange", sa.Text, nullable=False),
    sa.Column("routing_key", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("headers", _json(), nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=True),
    sa.Column("reply_to", sa.Text, nullable=True),
    sa.Column("type", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("sent_at", UtcDateTime(), nullable=True),
    sa.UniqueConstraint("message_id"),
    # The relay's query: unsent rows, oldest first; sent rows wait only for pruning.
    sa.Index(
        "ix_outbox_unsent",
        "id",
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    ),
    # Ids only ever grow, even after the newest rows were pruned (the relay's order).
    sqlite_autoincrement=True,
)
"""Messages decided in a transaction, waiting for the relay to publish them."""

processed_messages = sa.Table(
    "processed_messages",
    metadata,
    sa.Column("consumer", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("message_id", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("processed_at", UtcDateTime(), nullable=False),
    sa.Index("ix_processed_messages_processed_at", "processed_at"),
)
"""The inbox: message ids each consumer has handled (dedupe), pruned by age."""
