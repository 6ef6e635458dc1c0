"""``saga db``: database migrations."""

from __future__ import annotations

import click


@click.group()
def db() -> None:
    """Manage the orchestrator's database."""
