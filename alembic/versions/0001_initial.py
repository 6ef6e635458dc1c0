"""The initial schema: saga instances, steps, history, the outbox and the inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written out in full rather than importing the models, so this revision stays what it
was when later revisions change the models; ``alembic check`` (and the store's tests,
through ``orchestrator.migrations.check``) proves the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
    )


def _datetime() -> sa.DateTime:
    # orchestrator.stores.tables.UtcDateTime stores through this type.
    return sa.DateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "saga_instances",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            _enum("state", "running", "completed", "compensating", "compensated", "failed"),
            nullable=False,
        ),
        sa.Column("definition", _json(), nullable=False),
        sa.Column("input", _json(), nullable=True),
        sa.Column("output", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("lock_version", sa.Integer(), nullable=False),
        sa.Column("trace_context", _json(), nullable=True),
        sa.Column("created_at", _datetime(), nullable=False),
        sa.Column("updated_at", _datetime(), nullable=False),
        sa.CheckConstraint(
            "lock_version >= 1", name=op.f("ck_saga_instances_lock_version_positive")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_instances")),
        sa.UniqueConstraint(
            "name", "idempotency_key", name=op.f("uq_saga_instances_name_idempotency_key")
        ),
    )
    op.create_index("ix_saga_instances_created_at", "saga_instances", ["created_at"])
    op.create_index("ix_saga_instances_name_created_at", "saga_instances", ["name", "created_at"])
    op.create_index("ix_saga_instances_state_created_at", "saga_instances", ["state", "created_at"])

    op.create_table(
        "saga_steps",
        sa.Column("saga_id", sa.String(length=64), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "status",
            _enum(
                "status",
                "pending",
                "running",
                "succeeded",
                "failed",
                "compensating",
                "compensated",
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("effect_possible", sa.Boolean(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("deadline_at", _datetime(), nullable=True),
        sa.Column("deadline_kind", _enum("deadline_kind", "action", "compensation"), nullable=True),
        sa.Column("deadline_purpose", _enum("deadline_purpose", "reply", "retry"), nullable=True),
        sa.Column(
            "compensation_status",
            _enum("compensation_status", "running", "succeeded", "failed"),
            nullable=True,
        ),
        sa.Column("compensation_attempts", sa.Integer(), nullable=False),
        sa.Column("compensation_result", _json(), nullable=True),
        sa.Column("compensation_error", _json(), nullable=True),
        sa.Column("compensation_generation", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "(deadline_at IS NULL AND deadline_kind IS NULL AND deadline_purpose IS NULL)"
            " OR (deadline_at IS NOT NULL AND deadline_kind IS NOT NULL"
            " AND deadline_purpose IS NOT NULL)",
            name=op.f("ck_saga_steps_deadline_complete"),
        ),
        sa.ForeignKeyConstraint(
            ["saga_id"],
            ["saga_instances.id"],
            name=op.f("fk_saga_steps_saga_id_saga_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("saga_id", "step_index", name=op.f("pk_saga_steps")),
    )
    op.create_index(
        "ix_saga_steps_deadline_at",
        "saga_steps",
        ["deadline_at"],
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
        sqlite_where=sa.text("deadline_at IS NOT NULL"),
    )

    op.create_table(
        "saga_history",
        sa.Column("saga_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", _datetime(), nullable=False),
        sa.Column(
            "type",
            _enum(
                "type",
                "started",
                "step_sent",
                "step_succeeded",
                "step_failed",
                "step_timed_out",
                "compensation_sent",
                "compensation_succeeded",
                "compensation_failed",
                "completed",
                "compensated",
                "failed",
                "reply_ignored",
                "operator_retry",
                "operator_abort",
                "operator_resolve",
            ),
            nullable=False,
        ),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("detail", _json(), nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_saga_history_seq_positive")),
        sa.ForeignKeyConstraint(
            ["saga_id"],
            ["saga_instances.id"],
            name=op.f("fk_saga_history_saga_id_saga_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("saga_id", "seq", name=op.f("pk_saga_history")),
    )

    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("saga_id", sa.String(length=64), nullable=True),
        sa.Column("exchange", sa.Text(), nullable=False),
        sa.Column("routing_key", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("headers", _json(), nullable=False),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("correlation_id", sa.Text(), nullable=True),
        sa.Column("reply_to", sa.Text(), nullable=True),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("created_at", _datetime(), nullable=False),
        sa.Column("sent_at", _datetime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_outbox_message_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )

    op.create_table(
        "processed_messages",
        sa.Column("consumer", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("processed_at", _datetime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_processed_messages")),
    )
    op.create_index("ix_processed_messages_processed_at", "processed_messages", ["processed_at"])


def downgrade() -> None:
    """Drop every table (and its indexes), children first."""
    op.drop_table("processed_messages")
    op.drop_table("outbox")
    op.drop_table("saga_history")
    op.drop_table("saga_steps")
    op.drop_table("saga_instances")
