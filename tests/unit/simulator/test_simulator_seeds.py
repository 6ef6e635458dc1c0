"""R18: the saga core under crashes and a faulty broker, one seed after another.

``SAGA_SIM_SEEDS`` says how many seeds run (0 to n-1; 4,000 by default);
``SAGA_SIM_SEED=n`` runs seed n alone, and with ``SAGA_SIM_VERBOSE=1`` prints its event
trace. A failing seed's message names the seed, each broken invariant and the command
that replays it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import pytest

from .sim_faults import Stats
from .sim_invariants import check, report
from .sim_world import Simulation

# 4,000 seeds take well under half a minute on an idle 2-core machine; the margin is for a
# machine that is busy with other tests.
pytestmark = pytest.mark.timeout(300)

DEFAULT_SEEDS = 4_000
MAX_FAILING_SEEDS = 5
"""Stop after this many failing seeds: their reports are what matters, not the count."""


def _whole_number(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        pytest.fail(f"{name} must be a whole number of 0 or more, not {raw!r}.", pytrace=False)
    return int(raw)


def _seeds(environ: Mapping[str, str]) -> range:
    single = _whole_number(environ, "SAGA_SIM_SEED")
    if single is not None:
        return range(single, single + 1)
    count = _whole_number(environ, "SAGA_SIM_SEEDS")
    return range(DEFAULT_SEEDS if count is None else count)


def test_every_seed_keeps_every_invariant(capsys: pytest.CaptureFixture[str]) -> None:
    seeds = _seeds(os.environ)
    verbose = os.environ.get("SAGA_SIM_VERBOSE") == "1"
    total = Stats()
    failures = []
    started = time.perf_counter()
    for seed in seeds:
        sim = Simulation(seed, verbose=verbose).run()
        total.add(sim.stats)
        violations = check(sim)
        if sim.trace is not None:
            with capsys.disabled():
                print("\n" + "\n".join(sim.trace))
                print(
                    report(seed, violations) if violations else f"seed {seed}: every invariant held"
                )
        if violations:
            failures.append(report(seed, violations))
            if len(failures) >= MAX_FAILING_SEEDS:
                break
    elapsed = time.perf_counter() - started
    print(f"{total.runs} seeds in {elapsed:.1f}s ({total.runs / elapsed * 60:,.0f} per minute)")
    print(total.summary())
    assert not failures, "\n\n".join(failures)
