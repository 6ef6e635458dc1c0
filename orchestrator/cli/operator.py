"""``saga retry``, ``saga abort``, ``saga resolve``: an operator moves a saga by hand."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import click

from orchestrator.core.events import Event, Migrate, OperatorAbort, OperatorResolve, OperatorRetry
from orchestrator.core.machine import decide
from orchestrator.core.state import SagaState, SagaStatus, StepStatus
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.engine import OperatorRefused, UnknownSaga, utc_now
from orchestrator.operations import Outcome, operate
from orchestrator.settings import Settings
from orchestrator.stores.sql import SqlStore

_REASON = click.option("--reason", help="Why, for the saga's history.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _report(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "id": outcome.saga_id,
                    "previous_state": outcome.previous.value,
                    "state": outcome.state.value,
                    "published": outcome.published,
                }
            )
        )
        return
    click.echo(f"{outcome.saga_id}: {outcome.previous.value} -> {outcome.state.value}")
    if not outcome.published:
        click.echo(
            "  the broker could not be reached: the orchestrator will send the command", err=True
        )


async def _one(saga_id: str, event: Event) -> Outcome:
    settings = Settings.from_env(os.environ)
    store = await SqlStore.connect(settings.database_url)
    try:
        await store.check_schema()
        _decision, outcome = await operate(store, settings, saga_id, event)
        return outcome
    finally:
        await store.close()


@click.command()
@click.argument("saga_id", required=False)
@click.option("--all", "every", is_flag=True, help="Every failed saga (after a bug fix).")
@click.option("--name", help="With --all: only sagas of this definition.")
@click.option(
    "--state",
    type=click.Choice([SagaStatus.FAILED.value]),
    default=SagaStatus.FAILED.value,
    help="With --all: the state to retry (only failed sagas can be).",
)
@click.option("--dry-run", is_flag=True, help="With --all: list what would be retried.")
@_REASON
@_JSON
def retry(
    saga_id: str | None,
    every: bool,
    name: str | None,
    state: str,
    dry_run: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Send what failed for good again, under a fresh idempotency key (a failed saga)."""
    if every == (saga_id is not None):
        raise click.UsageError("give a saga ID or --all")
    if not every and (name or dry_run):
        raise click.UsageError("--name and --dry-run go with --all")
    if saga_id is not None:
        _report(asyncio.run(_one(saga_id, OperatorRetry(reason))), as_json)
        return
    outcomes = asyncio.run(_retry_all(name, reason, dry_run))
    if as_json:
        click.echo(json.dumps(outcomes))
        return
    for row in outcomes:
        verb = "would retry" if dry_run else f"{row['previous_state']} -> {row['state']}"
        click.echo(f"{row['id']}: {verb}")
    if not outcomes:
        click.echo("no failed sagas" + (f" named {name}" if name else ""))


async def _retry_all(
    name: str | None, reason: str | None, dry_run: bool
) -> list[dict[str, object]]:
    settings = Settings.from_env(os.environ)
    store = await SqlStore.connect(settings.database_url)
    try:
        await store.check_schema()
        failed = await store.list_sagas(state=SagaStatus.FAILED, name=name, limit=0)
        rows: list[dict[str, object]] = []
        for saga in failed:
            if dry_run:
                rows.append({"id": saga.id, "state": saga.state.value, "dry_run": True})
                continue
            try:
                _decision, outcome = await operate(store, settings, saga.id, OperatorRetry(reason))
            except OperatorRefused as exc:  # moved on since it was listed
                rows.append({"id": saga.id, "refused": str(exc)})
                continue
            rows.append(
                {
                    "id": saga.id,
                    "previous_state": outcome.previous.value,
                    "state": outcome.state.value,
                    "published": outcome.published,
                }
            )
        return rows
    finally:
        await store.close()


@click.command()
@click.argument("saga_id")
@_REASON
@_JSON
def abort(saga_id: str, reason: str | None, as_json: bool) -> None:
    """Compensate a running saga now (a step in flight counts as timed out)."""
    _report(asyncio.run(_one(saga_id, OperatorAbort(reason))), as_json)


@click.command()
@click.argument("saga_id")
@_REASON
@_JSON
def resolve(saga_id: str, reason: str | None, as_json: bool) -> None:
    """Mark a failed saga compensated after a person cleaned up by hand."""
    _report(asyncio.run(_one(saga_id, OperatorResolve(reason))), as_json)


@click.command()
@click.argument("saga_id")
@click.option(
    "--to-version",
    "version",
    type=click.IntRange(min=1),
    required=True,
    help="The version of the saga's definition to move it to (from SAGA_DEFINITIONS).",
)
@click.option(
    "--map",
    "renames",
    multiple=True,
    metavar="OLD=NEW",
    help="A step the new version renamed (repeat for several).",
)
@click.option("--dry-run", is_flag=True, help="Say what would change and change nothing.")
@_REASON
@_JSON
def migrate(
    saga_id: str,
    version: int,
    renames: tuple[str, ...],
    dry_run: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Move a running saga to another version of its definition: the steps it has run must
    begin that version (by name, or as mapped with --map)."""
    mapping: dict[str, str] = {}
    for item in renames:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise click.UsageError(f"--map takes OLD=NEW (a step name each), not {item!r}")
        mapping[old] = new
    plan = asyncio.run(_migrate(saga_id, version, mapping, dry_run, reason))
    if as_json:
        click.echo(json.dumps(plan))
        return
    verb = "would move" if dry_run else "moved"
    click.echo(
        f"{plan['id']}: {verb} from {plan['name']} v{plan['from_version']}"
        f" to v{plan['to_version']} ({plan['state']})"
    )
    for label in ("carried", "renamed", "added", "dropped"):
        if plan[label]:
            click.echo(f"  {label}: {', '.join(plan[label])}")


async def _migrate(
    saga_id: str, version: int, renames: dict[str, str], dry_run: bool, reason: str | None
) -> dict[str, Any]:
    settings = Settings.from_env(os.environ)
    registry = DefinitionRegistry.load_dir(settings.definitions_dir)
    store = await SqlStore.connect(settings.database_url)
    try:
        await store.check_schema()
        record = await store.get(saga_id)
        if record is None:
            raise UnknownSaga(f"no saga with id {saga_id}")
        name = record.state.definition.name
        event = Migrate(registry.get(name, version), renames, reason)
        if dry_run:
            decision = decide(record.state, event, utc_now())
            if decision.refusal is not None:
                raise OperatorRefused(decision.refusal)
            after = decision.state
        else:
            decision, _outcome = await operate(store, settings, saga_id, event)
            after = decision.state
        return _migration_plan(record.state, after, renames, dry_run)
    finally:
        await store.close()


def _migration_plan(
    before: SagaState, after: SagaState, renames: dict[str, str], dry_run: bool
) -> dict[str, Any]:
    ran = [s.name for s in before.steps if s.status is not StepStatus.PENDING]
    carried = [renames.get(name, name) for name in ran]
    kept = {renames.get(s.name, s.name) for s in before.steps}
    return {
        "id": after.saga_id,
        "name": after.definition.name,
        "from_version": before.definition.version,
        "to_version": after.definition.version,
        "state": after.status.value,
        "dry_run": dry_run,
        "carried": carried,
        "renamed": [f"{old} -> {new}" for old, new in renames.items()],
        "added": [s.name for s in after.definition.steps if s.name not in kept],
        "dropped": [
            s.name
            for s in before.steps
            if renames.get(s.name, s.name) not in {d.name for d in after.definition.steps}
        ],
    }
