"""``saga definitions``: check saga definition files."""

from __future__ import annotations

import click


@click.group()
def definitions() -> None:
    """Work with saga definitions (YAML)."""
