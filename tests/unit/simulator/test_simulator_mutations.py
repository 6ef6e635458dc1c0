"""The checker is not vacuous: with a safeguard removed, some seed must break an invariant.

RELIABILITY.md section 0, item 6: turn a safeguard off and the suite must go red. Each test
runs seeds until one breaks the invariant that safeguard protects, and fails if none does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from core.builders import sends

from orchestrator.core.effects import Record
from orchestrator.core.events import Event, ReplySucceeded
from orchestrator.core.machine import Decision, decide
from orchestrator.core.state import HistoryType, Kind, SagaState

from .sim_invariants import BACKWARDS, COMPENSATED, EFFECT_ONCE, check
from .sim_world import Simulation

SEEDS = range(300)


def _first_breaking(invariant: str, simulation: Callable[[int], Simulation]) -> int:
    """The first seed whose run (built by ``simulation``) breaks ``invariant``."""
    for seed in SEEDS:
        violations = check(simulation(seed).run())
        if any(v.invariant == invariant for v in violations):
            return seed
    raise AssertionError(f'no seed of {SEEDS} broke "{invariant}": the checker missed it')


def test_without_the_participant_inbox_effects_are_duplicated() -> None:
    seed = _first_breaking(EFFECT_ONCE, lambda seed: Simulation(seed, inbox=False))
    # The same seed with the inbox keeps the invariant: the inbox is what held it.
    kept = check(Simulation(seed).run())
    assert not [v for v in kept if v.invariant == EFFECT_ONCE], kept


def _skipping_first_compensation(state: SagaState, event: Event, now: datetime) -> Decision:
    """A broken core: the first step's compensation is marked done without being sent."""
    decision = decide(state, event, now)
    for send in sends(decision):
        if send.kind is Kind.COMPENSATION and send.step == state.steps[0].name:
            done = ReplySucceeded(send.step, send.kind, send.attempt, send.idempotency_key, {})
            later = decide(decision.state, done, now)
            kept = tuple(
                effect
                for effect in decision.effects
                if effect is not send
                and not (
                    isinstance(effect, Record) and effect.type is HistoryType.COMPENSATION_SENT
                )
            )
            return Decision(later.state, kept + later.effects)
    return decision


def test_a_core_that_skips_a_compensation_leaves_an_effect_undone() -> None:
    _first_breaking(COMPENSATED, lambda seed: Simulation(seed, decide=_skipping_first_compensation))


def test_a_store_that_loses_a_commit_in_a_crash_moves_a_saga_backwards() -> None:
    _first_breaking(BACKWARDS, lambda seed: Simulation(seed, durable=False))
