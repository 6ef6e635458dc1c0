"""``saga orchestrator run`` and ``saga participant run``: the long-lived services."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import replace
from pathlib import Path

import click

from orchestrator import crashpoints, eventloop
from orchestrator.definitions.errors import DefinitionInvalid
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.errors import SagaError
from orchestrator.lifecycle import serve
from orchestrator.logs import LogSettings, configure_logging
from orchestrator.service import OrchestratorService
from orchestrator.settings import Settings
from orchestrator.stores.engine import create_engine
from orchestrator.stores.sql import SqlStore
from orchestrator.telemetry.setup import Telemetry, TelemetrySettings
from orchestrator.transports.amqp import AmqpTransport
from participants.app import Participant
from participants.errors import ParticipantLoadError
from participants.runtime import ParticipantService, ParticipantSettings


@click.group()
def orchestrator() -> None:
    """Run the orchestrator service."""


@orchestrator.command("run")
@click.option(
    "--definitions",
    "definitions_dir",
    type=click.Path(path_type=Path),
    help="Folder of YAML saga definitions (default: $SAGA_DEFINITIONS or ./sagas).",
)
def run_orchestrator(definitions_dir: Path | None) -> None:
    """Consume start requests and replies until SIGTERM."""
    settings = Settings.from_env(os.environ)
    if definitions_dir is not None:
        settings = replace(settings, definitions_dir=definitions_dir)
    configure_logging(LogSettings.from_env(os.environ))
    crashpoints.arm(settings.crash_at)
    registry = _load_registry(settings.definitions_dir)
    telemetry = TelemetrySettings.from_env(os.environ, service_name="saga-orchestrator")
    eventloop.run(_run_orchestrator(settings, registry, telemetry), os.environ)


def _load_registry(folder: Path) -> DefinitionRegistry:
    if not folder.is_dir():
        raise SagaError(f"the definitions folder {folder} does not exist")
    try:
        return DefinitionRegistry.load_dir(folder)
    except DefinitionInvalid as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        raise SagaError(
            f"refusing to start: {len(exc.errors)} error(s) in the saga definitions"
        ) from None


async def _run_orchestrator(
    settings: Settings, registry: DefinitionRegistry, telemetry: TelemetrySettings
) -> None:
    store = await SqlStore.connect(settings.database_url, pool_size=settings.db_pool_size)
    transport = AmqpTransport(settings.amqp_url, name="saga-orchestrator")
    try:
        await transport.connect()
    except SagaError:
        await store.close()
        raise
    service = OrchestratorService(
        settings, registry, store, transport, Telemetry.start(telemetry, install_global=True)
    )
    await serve(service.start, service.stop)


@click.group()
def participant() -> None:
    """Run a participant service."""


@participant.command("run")
@click.argument("target", metavar="MODULE:ATTR")
def run_participant(target: str) -> None:
    """Run the Participant found at MODULE:ATTR (e.g. myservice.app:inventory)."""
    app = load_participant(target)
    settings = ParticipantSettings.from_env(app.name, os.environ)
    configure_logging(LogSettings.from_env(os.environ))
    crashpoints.arm(settings.crash_at)
    eventloop.run(_run_participant(app, settings), os.environ)


def load_participant(target: str) -> Participant:
    """Import MODULE and return its Participant ATTR, with a sentence on any mistake."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ParticipantLoadError(
            f"expected MODULE:ATTR (like myservice.app:inventory), got {target!r}"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ParticipantLoadError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # the user's module failed while importing: say how, briefly
        raise ParticipantLoadError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not hasattr(module, attr):
        raise ParticipantLoadError(f"module {module_name!r} has no attribute {attr!r}")
    value = getattr(module, attr)
    if not isinstance(value, Participant):
        raise ParticipantLoadError(
            f"{module_name}:{attr} is not a Participant (found {type(value).__name__})"
        )
    return value


async def _run_participant(app: Participant, settings: ParticipantSettings) -> None:
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    transport = AmqpTransport(settings.amqp_url, name=f"saga-participant-{app.name}")
    await transport.connect()
    telemetry = TelemetrySettings.from_env(os.environ, service_name=f"saga-participant-{app.name}")
    service = ParticipantService(
        app, settings, engine, transport, Telemetry.start(telemetry, install_global=True)
    )
    await serve(service.start, service.stop)
