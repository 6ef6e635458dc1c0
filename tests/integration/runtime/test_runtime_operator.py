"""Operator actions end to end: retry, abort and resolve move sagas as PRODUCT.md says, and
refuse, with a sentence, where the state does not allow them."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest
from harness import Rig
from test_runtime_cli import one_sentence, saga
from testapp import trio_input

from orchestrator.core.state import CompensationStatus, SagaStatus, StepStatus


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Operator actions go through the same engine and store as replies; SQLite is enough."""
    return f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"


async def _history_types(rig: Rig, saga_id: str) -> list[str]:
    store = await rig.reader()
    return [entry.type for entry in await store.history(saga_id)]


async def _until_sent(rig: Rig, saga_id: str, step: str, within: float = 30.0) -> None:
    """Poll, with a deadline, until the saga's history shows ``step`` sent."""
    store = await rig.reader()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        history = await store.history(saga_id)
        if any(e.type == "step_sent" and e.step == step for e in history):
            return
        assert loop.time() < deadline, f"{step} not sent: {[e.type for e in history]}"
        await asyncio.sleep(0.05)


async def test_retry_resends_a_failed_compensation_under_a_fresh_key(
    rig: Rig, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    inputs = trio_input(b={"fail": "permanent"}, undo_a={"fail_until_file": str(fixed)})
    [saga_id] = await rig.start([inputs])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.FAILED
    assert record.state.steps[0].status is StepStatus.COMPENSATING
    compensation = record.state.steps[0].compensation
    assert compensation is not None
    assert compensation.status is CompensationStatus.FAILED

    fixed.write_text("deployed the fix")
    result = await saga(rig, "retry", saga_id, "--reason", "fixed the release bug", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["previous_state"] == "failed"
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPENSATED
    store = await rig.reader()
    retry = [e for e in await store.history(saga_id) if e.type == "operator_retry"]
    assert retry[0].detail["reason"] == "fixed the release bug"
    effects = Counter((r.step, r.kind) for r in await rig.effects() if r.saga_id == saga_id)
    assert effects == {("a", "action"): 1, ("a", "compensation"): 1}

    again = await saga(rig, "retry", saga_id)
    assert "only a failed saga can be retried" in one_sentence(again)


async def test_abort_compensates_a_running_saga_including_the_step_in_flight(rig: Rig) -> None:
    # b sleeps for most of its 3 s timeout: time for the `saga abort` process to start.
    [saga_id] = await rig.start([trio_input(b={"delay_first": 2.7})])
    await _until_sent(rig, saga_id, "b")
    result = await saga(rig, "abort", saga_id, "--reason", "customer cancelled")
    assert result.code == 0, result.err
    assert "running -> compensating" in result.out
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPENSATED
    assert record.state.steps[1].status is StepStatus.COMPENSATED  # the step in flight
    effects = [(r.step, r.kind) for r in await rig.effects() if r.saga_id == saga_id]
    assert Counter(effects) == {
        ("a", "action"): 1,
        ("b", "action"): 1,
        ("b", "compensation"): 1,
        ("a", "compensation"): 1,
    }
    assert effects.index(("b", "compensation")) < effects.index(("a", "compensation"))
    refused = await saga(rig, "abort", saga_id)
    assert "only a running saga" in one_sentence(refused)


async def test_resolve_marks_a_failed_saga_compensated(rig: Rig) -> None:
    inputs = trio_input(b={"fail": "permanent"}, undo_a={"fail": "permanent"})
    [saga_id] = await rig.start([inputs])
    assert (await rig.wait_terminal([saga_id]))[saga_id].state.status is SagaStatus.FAILED
    result = await saga(rig, "resolve", saga_id, "--reason", "refunded by hand")
    assert result.code == 0, result.err
    record = await (await rig.reader()).get(saga_id)
    assert record is not None
    assert record.state.status is SagaStatus.COMPENSATED
    assert "operator_resolve" in await _history_types(rig, saga_id)
    refused = await saga(rig, "resolve", saga_id)
    assert "only a failed saga can be resolved" in one_sentence(refused)
    unknown = await saga(rig, "resolve", "no-such-saga")
    assert "no saga with id no-such-saga" in one_sentence(unknown)


async def test_retry_all_after_a_bug_fix(rig: Rig, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    inputs = trio_input(b={"fail": "permanent"}, undo_a={"fail_until_file": str(fixed)})
    saga_ids = await rig.start([inputs, inputs, trio_input()])
    records = await rig.wait_terminal(saga_ids)
    failed = sorted(i for i, r in records.items() if r.state.status is SagaStatus.FAILED)
    assert len(failed) == 2

    dry = await saga(rig, "retry", "--all", "--name", "trio", "--dry-run", "--json")
    assert sorted(row["id"] for row in json.loads(dry.out)) == failed
    store = await rig.reader()
    for saga_id in failed:  # the dry run moved nothing
        record = await store.get(saga_id)
        assert record is not None
        assert record.state.status is SagaStatus.FAILED

    fixed.write_text("deployed the fix")
    done = await saga(rig, "retry", "--all", "--reason", "bug 123 fixed")
    assert done.code == 0, done.err
    assert done.out.count("failed -> compensating") == 2
    records = await rig.wait_terminal(failed)
    assert {r.state.status for r in records.values()} == {SagaStatus.COMPENSATED}
