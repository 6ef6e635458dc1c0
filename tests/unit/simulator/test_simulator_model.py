"""The simulator itself: deterministic per seed, and it really injects what it claims.

A simulator that never drops, duplicates or crashes would pass every invariant for the
wrong reason; so would one whose sagas all complete. These tests pin that the faults
happen (and only in the fault phase), that the safeguards absorb them, and that runs end
in every terminal status.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from orchestrator.core.state import SagaStatus

from .sim_faults import Stats
from .sim_world import Simulation

FAULT = "FAULT"
"""The mark of a trace line about a drop, a lost confirm or a crash."""


def test_a_seed_replays_the_same_run_with_or_without_its_trace() -> None:
    for seed in (3, 147, 2024):
        first = Simulation(seed, verbose=True).run()
        again = Simulation(seed, verbose=True).run()
        quiet = Simulation(seed).run()
        assert first.trace == again.trace
        assert first.trace
        assert asdict(first.stats) == asdict(again.stats) == asdict(quiet.stats)
        assert first.orchestrator.states == quiet.orchestrator.states
        assert first.effects == quiet.effects


def test_runs_inject_every_fault_and_the_safeguards_absorb_them() -> None:
    total = Stats()
    statuses: Counter[SagaStatus] = Counter()
    for seed in range(300):
        sim = Simulation(seed).run()
        total.add(sim.stats)
        statuses.update(state.status for state in sim.orchestrator.states.values())
    injected = {
        "drops": total.drops,
        "lost confirms": total.lost_confirms,
        "duplicates": total.duplicates,
        "orchestrator crashes": total.orchestrator_crashes,
        "participant crashes": total.participant_crashes,
    }
    absorbed = {
        "republished outbox rows": total.republished,
        "inbox answers": total.inbox_answers,
        "replies deduplicated": total.replies_deduplicated,
        "actions cancelled by their compensation": total.cancelled_actions,
        "timers fired": total.timers_fired,
    }
    assert all(injected.values()), injected
    assert all(absorbed.values()), absorbed
    # Per run, a few of each on average: enough to matter, few enough to let sagas finish.
    assert 0.5 <= total.orchestrator_crashes / total.runs <= 5, total.summary()
    assert set(statuses) == {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}


def test_faults_stop_when_the_quiet_phase_begins() -> None:
    late = []
    faults = 0
    for seed in range(100):
        sim = Simulation(seed, verbose=True).run()
        assert sim.trace is not None
        end = sim.fault_end / 1_000_000
        for line in sim.trace:
            at, text = line.split("s ", 1)
            faults += FAULT in text
            if FAULT in text and float(at) >= end:
                late.append(f"seed {seed}, fault phase until {end:g}s: {line.strip()}")
    assert faults > 100, "the traces show hardly any faults"
    assert not late, "\n".join(late[:10])
