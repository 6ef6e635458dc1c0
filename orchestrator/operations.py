"""Operator actions (``saga retry/abort/resolve``) and finding stuck sagas (``saga list --stuck``).

An operator action is an event for the state machine like any other: the engine applies
it in one transaction and writes the commands it causes to the outbox. This process then
publishes them at once; if the broker cannot be reached, the orchestrator's outbox sweep
sends them shortly after.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.core.events import Event
from orchestrator.core.machine import Decision
from orchestrator.core.state import SagaState, SagaStatus, StepStatus
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.engine import Engine, UnknownSaga, utc_now
from orchestrator.outbox import OutboxRelay
from orchestrator.settings import Settings
from orchestrator.store import OutboxMessage, SagaRecord, Store
from orchestrator.transport import TransportError
from orchestrator.transports.amqp import AmqpTransport

log = logging.getLogger(__name__)

STUCK_GRACE = timedelta(minutes=1)
"""How much longer than its step may legitimately wait a saga must be idle to be stuck."""


@dataclass(frozen=True)
class Outcome:
    """What an operator action did."""

    saga_id: str
    previous: SagaStatus
    state: SagaStatus
    published: bool
    """False when the commands it caused wait in the outbox for the orchestrator to send."""


async def operate(
    store: Store, settings: Settings, saga_id: str, event: Event
) -> tuple[Decision, Outcome]:
    """Apply one operator event and publish what it sends; refusals raise OperatorRefused."""
    pending: list[OutboxMessage] = []
    engine = Engine(store, DefinitionRegistry(), on_commit=pending.extend)
    record = await store.get(saga_id)
    if record is None:
        raise UnknownSaga(f"no saga with id {saga_id}")
    decision = await engine.operate(saga_id, event)
    published = await _publish(store, settings, pending)
    outcome = Outcome(saga_id, record.state.status, decision.state.status, published)
    return decision, outcome


async def _publish(store: Store, settings: Settings, messages: Sequence[OutboxMessage]) -> bool:
    if not messages:
        return True
    transport = AmqpTransport(settings.amqp_url, name="saga-cli")
    try:
        await transport.connect()
        relay = OutboxRelay(store, transport, utc_now)
        return await relay.publish(messages) == len(messages)
    except TransportError as exc:
        log.warning("could not publish now (%s); the orchestrator will send it", exc)
        return False
    finally:
        await transport.close()


@dataclass(frozen=True)
class Stuck:
    """A saga idle for longer than its current step can legitimately wait."""

    record: SagaRecord
    waiting_on: str | None
    idle: timedelta
    allowed: timedelta


def wait_budget(state: SagaState) -> tuple[str | None, timedelta]:
    """The step a running or compensating saga waits on (the slowest, in a parallel group),
    and how long it may legitimately wait without any progress: timeout x attempts plus the
    backoffs between them. A retriable step records every attempt, so one attempt and the
    longest backoff are its budget."""
    waiting: tuple[str | None, timedelta] = (None, timedelta())
    for index, step in enumerate(state.steps):
        if step.status not in (StepStatus.RUNNING, StepStatus.COMPENSATING):
            continue
        definition = state.step_definition(index)
        if step.status is StepStatus.RUNNING and definition.retries_forever():
            budget = definition.timeout + definition.retry.backoff.max
        else:
            attempts = definition.retry.max_attempts
            backoffs = sum(
                (definition.retry.backoff.delay(n) for n in range(1, attempts)), timedelta()
            )
            budget = definition.timeout * attempts + backoffs
        if waiting[0] is None or budget > waiting[1]:
            waiting = (step.name, budget)
    return waiting


def find_stuck(records: Sequence[SagaRecord], now: datetime) -> list[Stuck]:
    """The running or compensating sagas among ``records`` that have been idle too long."""
    stuck = []
    for record in records:
        if record.state.status not in (SagaStatus.RUNNING, SagaStatus.COMPENSATING):
            continue
        step, budget = wait_budget(record.state)
        allowed = budget + STUCK_GRACE
        idle = now - record.updated_at
        if idle > allowed:
            stuck.append(Stuck(record, step, idle, allowed))
    return stuck
