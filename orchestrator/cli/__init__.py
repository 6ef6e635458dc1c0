"""The ``saga`` command line.

Each command group lives in its own module; this one builds the root group and turns
every :class:`~orchestrator.errors.SagaError` into one sentence on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys

import click

from orchestrator.cli.db import db
from orchestrator.cli.definitions import definitions
from orchestrator.cli.sagas import history, list_sagas, start, status
from orchestrator.cli.services import orchestrator, participant
from orchestrator.errors import SagaError
from participants.errors import ParticipantError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A saga orchestrator on RabbitMQ."""


for command in (
    db,
    definitions,
    orchestrator,
    participant,
    start,
    status,
    list_sagas,
    history,
):
    cli.add_command(command)


def main() -> None:
    """Entry point of the ``saga`` console script."""
    try:
        # Without standalone mode click returns (rather than raises) a ctx.exit() code.
        code = cli.main(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (SagaError, ParticipantError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
