"""The participant's inbox: one row per idempotency key, committed with the handler's own writes.

How a command is run exactly once per key, without leases:

- The handler runs inside a transaction that first inserts the key's row. On
  PostgreSQL a second transaction inserting the same key waits for the first to
  finish (the unique index), then sees its committed row; on SQLite the write lock
  serialises them. So the same key never runs twice at once, and a crashed attempt
  leaves nothing behind (its transaction rolls back) and simply runs again.
- A row is written only with a final outcome: ``succeeded`` (with the result),
  ``failed`` (failed for good, with the error) or ``cancelled`` (a compensation
  came first: the action must never run after it). A retryable failure rolls the
  transaction back, so the next attempt runs the handler again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

metadata = sa.MetaData()


class InboxStatus(StrEnum):
    """The final outcome stored for a key."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RUNNING = "running"
    """Only ever visible inside the transaction that is running the handler."""


inbox = sa.Table(
    "saga_inbox",
    metadata,
    sa.Column("idempotency_key", sa.String(400), primary_key=True),
    sa.Column("saga_id", sa.String(200), nullable=False),
    sa.Column("step", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column(
        "status",
        sa.Enum(
            InboxStatus,
            native_enum=False,
            create_constraint=True,
            name="saga_inbox_status",
            values_callable=lambda enum: [member.value for member in enum],
            length=20,
        ),
        nullable=False,
    ),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error_code", sa.String(200), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_saga_inbox_updated_at", inbox.c.updated_at)

suspects = sa.Table(
    "saga_inbox_suspects",
    metadata,
    sa.Column("message_id", sa.String(400), primary_key=True),
    sa.Column("deaths", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
"""Redelivered commands being run: a row that outlives its run means the process died in it.

Only a redelivered command gets a row (its earlier delivery ended without an answer), so
the common path pays nothing. The row is written and committed before the handler runs and
deleted once the run has an answer; a command whose runs keep killing the participant is a
poison message (see :func:`suspect`)."""


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(inbox)
    return sqlite.insert(inbox)


async def create_tables(engine: AsyncEngine) -> None:
    """Create the inbox table if it is missing (idempotent; run at every start)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all, checkfirst=True)


# Built once: the values are bound per call, so the statements' compiled forms are cached.
_INSERT_NEW = {
    dialect: _insert(dialect).on_conflict_do_nothing(index_elements=["idempotency_key"])
    for dialect in ("postgresql", "sqlite")
}
_FINISH = sa.update(inbox).where(inbox.c.idempotency_key == sa.bindparam("finished_key"))


async def _insert_new(conn: AsyncConnection, **values: Any) -> bool:
    """Insert a row unless the key has one; True if inserted."""
    now = datetime.now(UTC)
    statement = _INSERT_NEW[conn.dialect.name]
    result = await conn.execute(statement, {**values, "created_at": now, "updated_at": now})
    return bool(result.rowcount == 1)


async def claim(
    conn: AsyncConnection, *, key: str, saga_id: str, step: str, kind: str
) -> sa.Row[Any] | None:
    """Insert ``key`` as running in this transaction; if it already has a final row, return it.

    Returns None when this transaction now owns the key and must run the handler."""
    if await _insert_new(
        conn,
        idempotency_key=key,
        saga_id=saga_id,
        step=step,
        kind=kind,
        status=InboxStatus.RUNNING,
    ):
        return None
    existing = await conn.execute(sa.select(inbox).where(inbox.c.idempotency_key == key))
    return existing.one()


async def cancel_action(conn: AsyncConnection, *, action_key: str, saga_id: str, step: str) -> None:
    """A compensation is about to run: make sure its action never runs after it.

    If the action has no row yet, insert a ``cancelled`` one (a late action will be
    answered as cancelled). If the action is running right now, this waits for it."""
    await _insert_new(
        conn,
        idempotency_key=action_key,
        saga_id=saga_id,
        step=step,
        kind="action",
        status=InboxStatus.CANCELLED,
    )


async def finish(
    conn: AsyncConnection,
    *,
    key: str,
    status: InboxStatus,
    result: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    """Store the final outcome of the key claimed in this transaction."""
    await conn.execute(
        _FINISH,
        {
            "finished_key": key,
            "status": status,
            "result": result,
            "error_code": error_code,
            "error_message": error_message,
            "updated_at": datetime.now(UTC),
        },
    )


def _insert_suspect(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(suspects)
    return sqlite.insert(suspects)


async def suspect(engine: AsyncEngine, message_id: str) -> int:
    """A redelivered command is about to run: how many times the process died running it.

    Its first delivery ended without an answer (one death, or a lost connection); every run
    of a redelivery that left its row behind is one more. Commits before returning, so the
    count survives the death this run may cause."""
    now = datetime.now(UTC)
    statement = _insert_suspect(engine.dialect.name).values(
        message_id=message_id, deaths=1, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["message_id"],
        set_={"deaths": suspects.c.deaths + 1, "updated_at": now},
    ).returning(suspects.c.deaths)
    async with engine.begin() as conn:
        deaths = (await conn.execute(statement)).scalar_one()
    return int(deaths)


async def cleared(engine: AsyncEngine, message_id: str) -> None:
    """A redelivered command's run has its answer: it is not poison after all."""
    async with engine.begin() as conn:
        await conn.execute(sa.delete(suspects).where(suspects.c.message_id == message_id))


async def prune(engine: AsyncEngine, *, before: datetime, limit: int = 0) -> int:
    """Delete finished rows (and suspects) last touched before ``before``, at most ``limit``
    of each (0: all); how many."""
    finished = sa.select(inbox.c.idempotency_key).where(
        inbox.c.updated_at < before, inbox.c.status != InboxStatus.RUNNING
    )
    stale = sa.select(suspects.c.message_id).where(suspects.c.updated_at < before)
    if limit > 0:
        finished, stale = finished.limit(limit), stale.limit(limit)
    async with engine.begin() as conn:
        result = await conn.execute(sa.delete(inbox).where(inbox.c.idempotency_key.in_(finished)))
        gone = await conn.execute(sa.delete(suspects).where(suspects.c.message_id.in_(stale)))
        return int(result.rowcount) + int(gone.rowcount)
