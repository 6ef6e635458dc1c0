"""Processes dying: the orchestrator and the participants SIGKILLed at random moments (R2, R4,
R17 on SQLite) and stopped dead at every named crash point (R3), while sagas of the trio mix
run. Nothing may be lost, stuck, done twice or done wrong.

Each campaign prints its seed and its scoreboard line; ``SAGA_TEST_SEED=<seed>`` repeats
the same sagas and the same fault schedule.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from orchestrator import crashpoints

from .conftest import MakeRig
from .faultrig import scaled

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(1800)]


async def test_r2_orchestrator_killed_at_random_points(make_rig: MakeRig) -> None:
    rig = make_rig("R2 kill -9 orchestrator")
    await rig.open()
    assert rig.orchestrator is not None
    load = asyncio.create_task(rig.load(rig.plan(scaled(150, 1000))))
    kills = scaled(4, 30)
    while kills and not load.done():
        await asyncio.sleep(rig.rng.uniform(0.3, 2.0))
        await rig.kill_and_restart(rig.orchestrator, delay=rig.rng.uniform(0.0, 2.0))
        kills -= 1
    report = await rig.finish(await load)
    assert report.faults >= 1, "the load ended before the first kill"
    report.check()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_r4_participants_killed_at_random_points(make_rig: MakeRig) -> None:
    rig = make_rig("R4 kill -9 participants")
    await rig.open()
    load = asyncio.create_task(rig.load(rig.plan(scaled(150, 1000))))
    kills = scaled(4, 60)
    names = sorted(rig.participants)
    while kills and not load.done():
        await asyncio.sleep(rig.rng.uniform(0.2, 1.5))
        victim = rig.participants[rig.rng.choice(names)]
        await rig.kill_and_restart(victim, delay=rig.rng.uniform(0.0, 1.0))
        kills -= 1
    report = await rig.finish(await load)
    report.check()


_ORCHESTRATOR_POINTS = sorted(p for p in crashpoints.POINTS if p.startswith("orchestrator."))
_PARTICIPANT_POINTS = sorted(p for p in crashpoints.POINTS if p.startswith("participant."))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("point", _ORCHESTRATOR_POINTS + _PARTICIPANT_POINTS)
async def test_r3_a_crash_at_each_named_point_loses_and_repeats_nothing(
    point: str, make_rig: MakeRig, seed: int
) -> None:
    rng = random.Random(seed)
    # The participant points are armed in beta, which every saga reaches.
    victim = "orchestrator" if point.startswith("orchestrator.") else "participant-beta"
    # Sparse points (a compensation) are hit less often than per-message ones. In a
    # participant, a restart first runs the redelivered commands one at a time (suspects of
    # a poison); the crash points do not fire in those (dying in one again and again would
    # make it look like poison), and the participant's deaths come a few commands later.
    if point == "orchestrator.mid_compensation":
        hits = (1, 3)
    elif point.startswith("participant."):
        hits = (5, 20)
    else:
        hits = (1, 15)
    rig = make_rig(f"R3 crash at {point}")
    await rig.open(armed={victim: f"{point}@{rng.randint(*hits)}"})
    process = next(p for p in rig.processes if p.name == victim)
    load = asyncio.create_task(rig.load(rig.plan(scaled(60, 250))))
    crashes = await rig.crash_loop(process, point, crashes=scaled(2, 12), hits=hits, load=load)
    report = await rig.finish(await load)
    assert crashes >= 1, f"the process never reached {point}"
    report.check()
