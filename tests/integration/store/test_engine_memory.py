"""Two orchestrator processes on one database, as the engine uses the store: a reply to the
step a process sent from its own memory costs one statement, and a reply to a saga the
other process moved since costs a read and a write, never a write refused as stale."""

from __future__ import annotations

from store_helpers import statements

from contracts import StartRequest, StepReply
from orchestrator.definitions import load_text
from orchestrator.definitions.registry import DefinitionRegistry
from orchestrator.engine import Engine, new_id
from orchestrator.stores import SqlStore

THREE = """\
name: three
version: 1
steps:
  - {name: a, participant: p, command: do}
  - {name: b, participant: p, command: do}
  - {name: c, participant: p, command: do}
"""


def _success(saga_id: str, step: str) -> StepReply:
    return StepReply(
        message_id=new_id(),
        saga_id=saga_id,
        step=step,
        kind="action",
        attempt=1,
        idempotency_key=f"{saga_id}:{step}:action",
        outcome="success",
        result={},
    )


async def test_a_process_decides_from_memory_only_what_its_memory_expects(
    postgres_store: SqlStore,
) -> None:
    registry = DefinitionRegistry.from_definitions([load_text(THREE, "three.yaml")])
    here = Engine(postgres_store, registry, on_commit=lambda _messages: None)
    there = Engine(SqlStore(postgres_store.engine), registry, on_commit=lambda _messages: None)
    request = StartRequest(
        message_id=new_id(), saga_name="three", input={}, idempotency_key="order-1"
    )
    started = await here.start(request, reply_to=None)
    assert started is not None
    assert started.saga_id is not None
    saga_id = started.saga_id

    with statements(postgres_store.engine) as log:
        assert await here.on_reply(_success(saga_id, "a")) is not None
    assert len(log.statements) == 1  # it sent a's command: decided from memory

    with statements(postgres_store.engine) as log:
        assert await there.on_reply(_success(saga_id, "b")) is not None
    assert len(log.statements) == 2  # a read, then the write

    # Here still remembers the saga waiting for b; a reply for c says it moved elsewhere.
    with statements(postgres_store.engine) as log:
        decision = await here.on_reply(_success(saga_id, "c"))
    assert decision is not None
    assert decision.state.status.value == "completed"
    assert len(log.statements) == 2, [s.sql[:40] for s in log.statements]  # no refused write
