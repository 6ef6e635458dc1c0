"""End to end on the real broker and both databases: the saga semantics of PRODUCT.md."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from harness import Rig
from sqlalchemy import Row
from testapp import trio_input

from orchestrator.core.state import SagaStatus, StepStatus


def _kinds(rows: Sequence[Row[Any]], saga_id: str) -> list[tuple[str, str]]:
    return [(row.step, row.kind) for row in rows if row.saga_id == saga_id]


async def test_happy_path_runs_each_step_once_and_completes(rig: Rig) -> None:
    [saga_id] = await rig.start([trio_input()])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED
    assert record.state.output == {"last": "gamma"}
    assert _kinds(await rig.effects(), saga_id) == [
        ("a", "action"),
        ("b", "action"),
        ("c", "action"),
    ]


@pytest.mark.parametrize(
    ("failing", "compensated"),
    [("a", []), ("b", ["a"]), ("c", ["b", "a"])],
)
async def test_permanent_failure_compensates_completed_steps_in_reverse_once(
    rig: Rig, failing: str, compensated: list[str]
) -> None:
    [saga_id] = await rig.start([trio_input(**{failing: {"fail": "permanent"}})])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPENSATED
    assert record.state.error is not None
    assert record.state.error.code == "boom"
    done = _kinds(await rig.effects(), saga_id)
    actions = [step for step, kind in done if kind == "action"]
    undone = [step for step, kind in done if kind == "compensation"]
    assert actions == ["a", "b", "c"][: "abc".index(failing)]
    assert undone == compensated
    for step in compensated:
        index = record.state.definition.step_index(step)
        assert record.state.steps[index].status is StepStatus.COMPENSATED


async def test_retryable_failures_then_success(rig: Rig) -> None:
    [saga_id] = await rig.start([trio_input(b={"fail_times": 2})])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED
    assert record.state.steps[1].attempts == 3
    assert Counter(_kinds(await rig.effects(), saga_id))[("b", "action")] == 1


async def test_retries_exhausted_then_compensation(rig: Rig) -> None:
    [saga_id] = await rig.start([trio_input(b={"fail_times": 99})])
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPENSATED
    assert record.state.steps[1].attempts == 3
    # A retryable failure is not kept in the inbox, so b's outcome is unknown: b is
    # compensated first (which cancels its key), then a.
    assert record.state.steps[1].status is StepStatus.COMPENSATED
    assert _kinds(await rig.effects(), saga_id) == [
        ("a", "action"),
        ("b", "compensation"),
        ("a", "compensation"),
    ]


async def test_idempotent_start_by_key_returns_the_same_saga(rig: Rig) -> None:
    first = await rig.start([trio_input()], keys=["order-7"])
    again = await rig.start([trio_input()], keys=["order-7"])
    assert first == again
    await rig.wait_terminal(first)
    assert len(_kinds(await rig.effects(), first[0])) == 3
