"""The definition language end to end on the real broker: a parallel group, a condition, a
pivot with a retriable step after it, and the saga's deadline."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import Rig
from test_runtime_cli import one_sentence, saga

from orchestrator.core.state import SagaStatus, StepStatus

TRIP_YAML = """\
name: trip
version: 1
deadline: 60s
defaults:
  timeout: 3s
  retry:
    max_attempts: 2
    backoff: {initial: 50ms, multiplier: 2, max: 200ms}
steps:
  - name: hold
    participant: alpha
    command: do
    payload:
      behaviour: ${input.hold}
    compensation:
      command: undo
  - parallel:
      - name: flight
        participant: beta
        command: do
        payload:
          behaviour: ${input.flight}
          hold: ${steps.hold.result.by}
        compensation:
          command: undo
      - name: hotel
        participant: gamma
        command: do
        when: ${input.nights} > 0
        payload:
          behaviour: ${input.hotel}
        compensation:
          command: undo
  - name: charge
    participant: alpha
    command: do
    kind: pivot
    payload:
      behaviour: {}
      flight: ${steps.flight.result.by}
  - name: notify
    participant: beta
    command: do
    payload:
      behaviour: ${input.notify}
"""


CAREFUL_TRIP_YAML = (
    TRIP_YAML.replace("name: trip", "name: careful_trip")
    .replace("      - name: flight\n", "      - name: flight\n        on_failure: fail\n")
    .replace(
        "    compensation:\n      command: undo\n  - parallel:",
        "    retry: {never: [flaky]}\n    compensation:\n      command: undo\n  - parallel:",
    )
)


def _trip(nights: int = 1, **behaviours: dict[str, Any]) -> dict[str, Any]:
    slots = ("hold", "flight", "hotel", "notify")
    return {"nights": nights, **{slot: behaviours.get(slot, {}) for slot in slots}}


# On SQLite; the group also on PostgreSQL, whose store writes a transition in one statement.
ON_SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
async def rig(
    tmp_path: Path, amqp_url: str, database_url: str, participant_database_url: str
) -> AsyncIterator[Rig]:
    rig = await Rig.create(tmp_path, amqp_url, database_url, participant_database_url)
    (rig.definitions_dir / "trip.yaml").write_text(TRIP_YAML)
    # The same saga with a deadline a slow first attempt of flight outlasts.
    hurried = TRIP_YAML.replace("name: trip", "name: hurried_trip").replace("60s", "1500ms")
    (rig.definitions_dir / "hurried_trip.yaml").write_text(hurried)
    (rig.definitions_dir / "careful_trip.yaml").write_text(CAREFUL_TRIP_YAML)
    try:
        await rig.start_orchestrator()
        await rig.start_participants()
        yield rig
    finally:
        await rig.close()


async def _history(rig: Rig, saga_id: str) -> list[tuple[str, str | None]]:
    store = await rig.reader()
    return [(entry.type, entry.step) for entry in await store.history(saga_id)]


async def _effects(rig: Rig, saga_id: str) -> list[tuple[str, str]]:
    return [(row.step, row.kind) for row in await rig.effects() if row.saga_id == saga_id]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_group_runs_its_steps_at_once_and_a_false_condition_skips_one(rig: Rig) -> None:
    both, flight_only = await rig.start([_trip(nights=2), _trip(nights=0)], saga="trip")
    records = await rig.wait_terminal([both, flight_only])
    assert records[both].state.status is SagaStatus.COMPLETED
    history = await _history(rig, both)
    sent = [step for kind, step in history if kind == "step_sent"]
    assert sent[:3] == ["hold", "flight", "hotel"]
    flight_done = history.index(("step_succeeded", "flight"))
    assert history.index(("step_sent", "hotel")) < flight_done, "sent together, not in turn"

    skipped = records[flight_only].state
    assert skipped.status is SagaStatus.COMPLETED
    assert [s.status for s in skipped.steps] == [
        StepStatus.SUCCEEDED,
        StepStatus.SUCCEEDED,
        StepStatus.SKIPPED,
        StepStatus.SUCCEEDED,
        StepStatus.SUCCEEDED,
    ]
    assert ("step_skipped", "hotel") in await _history(rig, flight_only)
    assert ("hotel", "action") not in await _effects(rig, flight_only)


@ON_SQLITE
async def test_a_member_failing_for_good_compensates_the_group_and_what_came_before(
    rig: Rig,
) -> None:
    [saga_id] = await rig.start([_trip(hotel={"fail": "permanent"})], saga="trip")
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPENSATED
    effects = await _effects(rig, saga_id)
    undone = [step for step, kind in effects if kind == "compensation"]
    assert undone == ["flight", "hold"], effects  # hotel refused: nothing of it to undo
    assert record.state.steps[2].status is StepStatus.FAILED


@ON_SQLITE
async def test_past_the_pivot_a_failure_waits_for_an_operator_who_retries_it(
    rig: Rig, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    inputs = _trip(notify={"fail_until_file": str(fixed)})
    [saga_id] = await rig.start([inputs], saga="trip")
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.FAILED
    assert not [e for e in await _effects(rig, saga_id) if e[1] == "compensation"]
    store = await rig.reader()
    failed = [e for e in await store.history(saga_id) if e.type == "failed"]
    assert failed[-1].detail["why"] == "the saga is past its pivot 'charge' and cannot compensate"

    refused = await saga(rig, "abort", saga_id)
    assert "past its pivot 'charge'" in one_sentence(refused)
    fixed.write_text("the mail server is back")
    result = await saga(rig, "retry", saga_id, "--reason", "mail server fixed", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["previous_state"] == "failed"
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED


@ON_SQLITE
async def test_a_passed_deadline_compensates_counting_the_step_in_flight_as_timed_out(
    rig: Rig,
) -> None:
    # flight's first attempt takes 2.5 s (within its 3 s timeout), the saga may take 1.5 s:
    # the deadline passes while flight is in flight, before the pivot.
    [saga_id] = await rig.start([_trip(flight={"delay_first": 2.5})], saga="hurried_trip")
    record = (await rig.wait_terminal([saga_id], within=30))[saga_id]
    state = record.state
    assert state.status is SagaStatus.COMPENSATED, state
    assert state.error is not None
    assert state.error.code == "deadline"
    history = await _history(rig, saga_id)
    assert ("deadline_passed", None) in history
    undone = [s for s, kind in await _effects(rig, saga_id) if kind == "compensation"]
    assert set(undone) == {"hold", "flight", "hotel"}
    assert undone[-1] == "hold", "the step before the group is undone last"


@ON_SQLITE
async def test_a_stopped_saga_moves_to_a_new_version_and_finishes_on_it(
    rig: Rig, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    [saga_id] = await rig.start([_trip(notify={"fail_until_file": str(fixed)})], saga="trip")
    assert (await rig.wait_terminal([saga_id]))[saga_id].state.status is SagaStatus.FAILED
    # Version 2 renames notify and adds a receipt after it.
    v2 = TRIP_YAML.replace("version: 1", "version: 2").replace("name: notify", "name: mail")
    v2 += "  - name: receipt\n    participant: gamma\n    command: do\n"
    v2 += "    payload:\n      behaviour: {}\n"
    (rig.definitions_dir / "trip_v2.yaml").write_text(v2)

    refused = await saga(rig, "migrate", saga_id, "--to-version", "2")
    assert "does not begin with the steps" in one_sentence(refused)
    dry = await saga(
        rig, "migrate", saga_id, "--to-version", "2", "--map", "notify=mail", "--dry-run"
    )
    assert dry.code == 0, dry.err
    assert "would move from trip v1 to v2" in dry.out
    assert "added: receipt" in dry.out
    still = await saga(rig, "list", "--name", "trip", "--version", "1", "--json")
    assert [row["id"] for row in json.loads(still.out)] == [saga_id]

    moved = await saga(
        rig, "migrate", saga_id, "--to-version", "2", "--map", "notify=mail", "--json"
    )
    assert moved.code == 0, moved.err
    assert json.loads(moved.out)["renamed"] == ["notify -> mail"]
    on_v2 = await saga(rig, "list", "--name", "trip", "--version", "2", "--json")
    assert [row["id"] for row in json.loads(on_v2.out)] == [saga_id]

    fixed.write_text("mail works again")
    retried = await saga(rig, "retry", saga_id)
    assert retried.code == 0, retried.err
    record = (await rig.wait_terminal([saga_id]))[saga_id]
    assert record.state.status is SagaStatus.COMPLETED
    assert [s.name for s in record.state.steps][-2:] == ["mail", "receipt"]
    assert ("migrated", None) in await _history(rig, saga_id)


@ON_SQLITE
async def test_on_failure_fail_stops_for_a_person_who_compensates_and_never_skips_retries(
    rig: Rig,
) -> None:
    # careful_trip: hold never retries code 'flaky'; flight stops the saga for a person.
    flaky, stopped = await rig.start(
        [_trip(hold={"fail_times": 1}), _trip(flight={"fail": "permanent"})], saga="careful_trip"
    )
    records = await rig.wait_terminal([flaky, stopped])
    first = records[flaky].state
    assert first.status is SagaStatus.COMPENSATED
    assert first.steps[0].attempts == 1, "a 'flaky' failure is never retried here"
    assert records[stopped].state.status is SagaStatus.FAILED
    store = await rig.reader()
    why = [e.detail.get("why") for e in await store.history(stopped) if e.type == "failed"]
    assert why == ["step 'flight' has on_failure: fail"]
    for _ in range(600):  # hotel, in flight beside flight, is awaited: wait for its reply
        current = await store.get(stopped)
        if current is not None and current.state.steps[2].status is StepStatus.SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("hotel never succeeded")
    aborted = await saga(rig, "abort", stopped, "--reason", "refund the customer")
    assert aborted.code == 0, aborted.err
    assert "failed -> compensating" in aborted.out
    record = (await rig.wait_terminal([stopped]))[stopped]
    assert record.state.status is SagaStatus.COMPENSATED
    undone = [s for s, kind in await _effects(rig, stopped) if kind == "compensation"]
    assert sorted(undone) == ["hold", "hotel"]
