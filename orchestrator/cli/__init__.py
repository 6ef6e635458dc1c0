"""The ``saga`` command line.

Each command group lives in its own module, imported only when its command runs (the
services pull in aio-pika, SQLAlchemy and Alembic, which a ``saga status`` should not
wait for). This module turns every :class:`~orchestrator.errors.SagaError` into one
sentence on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from orchestrator.errors import SagaError

__all__ = ["cli", "main"]

_COMMANDS = {
    "db": "orchestrator.cli.db:db",
    "definitions": "orchestrator.cli.definitions:definitions",
    "orchestrator": "orchestrator.cli.services:orchestrator",
    "participant": "orchestrator.cli.services:participant",
    "start": "orchestrator.cli.sagas:start",
    "status": "orchestrator.cli.sagas:status",
    "list": "orchestrator.cli.sagas:list_sagas",
    "history": "orchestrator.cli.sagas:history",
    "trace": "orchestrator.cli.sagas:trace",
    "dlq": "orchestrator.cli.dlq:dlq",
    "retry": "orchestrator.cli.operator:retry",
    "abort": "orchestrator.cli.operator:abort",
    "resolve": "orchestrator.cli.operator:resolve",
    "migrate": "orchestrator.cli.operator:migrate",
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A saga orchestrator on RabbitMQ."""


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
    except SagaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
