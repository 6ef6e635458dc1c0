"""The definition language: skipped steps, completion order, saga deadlines, migrations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04

- ``saga_steps.status`` may be ``skipped`` (a ``when:`` was false);
- ``saga_steps.finished_seq`` numbers the steps of a saga in the order they finished, so
  parallel steps are compensated newest first (NULL for rows written before: index order);
- ``saga_steps.key_name`` keeps the name a step's idempotency keys carry when a migration
  renamed a step that had already run;
- ``saga_history.type`` gains ``step_skipped``, ``deadline_passed`` and ``migrated``;
- ``saga_instances.deadline_at`` is the whole saga's deadline, with the timer loop's index.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STEP_STATUSES = (
    "pending",
    "running",
    "succeeded",
    "failed",
    "compensating",
    "compensated",
)
HISTORY_TYPES = (
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
)
NEW_STEP_STATUSES = ("skipped",)
NEW_HISTORY_TYPES = ("step_skipped", "deadline_passed", "migrated")


def _one_of(column: str, values: Sequence[str]) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({listed})"


def _replace_check(table: str, column: str, values: Sequence[str]) -> None:
    name = op.f(f"ck_{table}_{column}")
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(name, type_="check")
        batch.create_check_constraint(name, sa.text(_one_of(column, values)))


def upgrade() -> None:
    """Widen the checks, add the completion order and the saga deadline."""
    _replace_check("saga_steps", "status", (*STEP_STATUSES, *NEW_STEP_STATUSES))
    _replace_check("saga_history", "type", (*HISTORY_TYPES, *NEW_HISTORY_TYPES))
    with op.batch_alter_table("saga_steps") as batch:
        batch.add_column(sa.Column("finished_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("key_name", sa.Text(), nullable=True))
    with op.batch_alter_table("saga_instances") as batch:
        batch.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_saga_instances_deadline_at",
        "saga_instances",
        ["deadline_at"],
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
        sqlite_where=sa.text("deadline_at IS NOT NULL"),
    )


def downgrade() -> None:
    """Back to 0001 (refused by the checks while rows use the new values)."""
    op.drop_index("ix_saga_instances_deadline_at", table_name="saga_instances")
    with op.batch_alter_table("saga_instances") as batch:
        batch.drop_column("deadline_at")
    with op.batch_alter_table("saga_steps") as batch:
        batch.drop_column("key_name")
        batch.drop_column("finished_seq")
    _replace_check("saga_history", "type", HISTORY_TYPES)
    _replace_check("saga_steps", "status", STEP_STATUSES)
