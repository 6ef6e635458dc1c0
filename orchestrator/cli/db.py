"""``saga db``: database migrations.

The database is ``--database-url`` or ``SAGA_DATABASE_URL`` (the default: SQLite in
``./saga.db``). Output names it with the password masked. A failure is a
:class:`~orchestrator.store.StoreError` (a ``SagaError``), which ``saga``'s entry point
turns into one sentence on stderr and exit status 1.
"""

from __future__ import annotations

import os

import click

from orchestrator import migrations
from orchestrator.settings import Settings
from orchestrator.stores.engine import mask_url

__all__ = ["db"]

_URL_OPTION = click.option(
    "--database-url",
    metavar="URL",
    default=None,
    help="The database (default: $SAGA_DATABASE_URL, else sqlite+aiosqlite:///./saga.db).",
)


@click.group()
def db() -> None:
    """Manage the orchestrator's database."""


@db.command()
@_URL_OPTION
def upgrade(database_url: str | None) -> None:
    """Apply every migration the database lacks (works from any directory)."""
    url = _url(database_url)
    revision = migrations.upgrade(url)
    click.echo(_describe(url, revision))


@db.command()
@_URL_OPTION
def current(database_url: str | None) -> None:
    """Show the revision the database is at."""
    url = _url(database_url)
    revision = migrations.current(url)
    click.echo(_describe(url, revision))


def _url(option: str | None) -> str:
    return option if option is not None else Settings.from_env(os.environ).database_url


def _describe(url: str, revision: str | None) -> str:
    where = mask_url(url)
    head = migrations.head()
    if revision is None:
        return f"database {where} is not migrated: run `saga db upgrade`"
    if revision == head:
        return f"database {where} is at revision {revision} (head)"
    return (
        f"database {where} is at revision {revision}; the newest is {head}: run `saga db upgrade`"
    )
