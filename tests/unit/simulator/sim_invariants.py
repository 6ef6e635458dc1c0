"""What every run must keep, checked after it ends; a broken rule is a :class:`Violation`.

The categories follow RELIABILITY.md: lost or stuck sagas (not terminal after the quiet
phase), duplicated effects, unexpected effects (a key nobody sent), compensations that are
missing, repeated, out of order or without their action, failed sagas nobody refused,
states that go backwards, and every single decision checked against the core's own rules
(``tests/unit/core/checks.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from core.builders import sends
from core.checks import check_decision, check_start

from orchestrator.core.state import CompensationStatus, Kind, SagaState, SagaStatus, StepStatus

from .sim_messages import EffectRecord
from .sim_orchestrator import Committed, SagaSpec, clock_of
from .sim_participants import FAILED
from .sim_world import Simulation

__all__ = [
    "BACKWARDS",
    "COMPENSATED",
    "COMPENSATION_ORDER",
    "COMPENSATION_WITHOUT_ACTION",
    "COMPLETED",
    "DECISION_RULES",
    "EFFECT_ONCE",
    "FAILED_SAGA",
    "RAISED",
    "SETTLED",
    "TERMINAL",
    "UNEXPECTED_EFFECT",
    "Violation",
    "check",
    "report",
    "rerun_command",
]

RAISED = "the run raises nothing"
SETTLED = "the quiet phase settles"
TERMINAL = "every saga ends terminal"
EFFECT_ONCE = "at most one committed effect per idempotency key"
UNEXPECTED_EFFECT = "no effect for a key the orchestrator never sent"
COMPLETED = "a completed saga has every step's effect once and no compensation"
COMPENSATED = "a compensated saga undid every step that took effect, exactly once"
COMPENSATION_ORDER = "compensations run in reverse step order"
COMPENSATION_WITHOUT_ACTION = "no compensation for a step whose action was never sent"
FAILED_SAGA = "a saga fails only when a compensation failed for good"
BACKWARDS = "state never goes backwards"
DECISION_RULES = "every decision keeps the core's rules"

_SAGA_MOVES = {
    SagaStatus.RUNNING: set(SagaStatus),
    SagaStatus.COMPENSATING: {SagaStatus.COMPENSATING, SagaStatus.COMPENSATED, SagaStatus.FAILED},
    # A late success for a step that failed for good reopens a compensated saga.
    SagaStatus.COMPENSATED: {SagaStatus.COMPENSATED, SagaStatus.COMPENSATING},
    SagaStatus.COMPLETED: {SagaStatus.COMPLETED},
    SagaStatus.FAILED: {SagaStatus.FAILED},
}
"""Saga status moves within one decision, without operator actions (which the run has none of)."""

_STEP_MOVES = {
    StepStatus.PENDING: {StepStatus.PENDING, StepStatus.RUNNING, StepStatus.FAILED},
    StepStatus.RUNNING: {
        StepStatus.RUNNING,
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
        StepStatus.COMPENSATING,
    },
    StepStatus.SUCCEEDED: {StepStatus.SUCCEEDED, StepStatus.COMPENSATING},
    StepStatus.FAILED: {StepStatus.FAILED, StepStatus.COMPENSATING},
    StepStatus.COMPENSATING: {StepStatus.COMPENSATING, StepStatus.COMPENSATED},
    StepStatus.COMPENSATED: {StepStatus.COMPENSATED},
}
"""Step status moves within one decision (a last attempt that times out is failed and its
compensation started at once: running to compensating)."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: which, for which saga (None for the whole run), and what happened."""

    invariant: str
    saga_id: str | None
    detail: str

    def __str__(self) -> str:
        return f'"{self.invariant}" broken ({self.saga_id or "the run"}): {self.detail}'


def check(sim: Simulation) -> list[Violation]:
    """Every violation in a finished run (an empty list when it kept every rule)."""
    found: list[Violation] = []
    if sim.error is not None:
        found.append(Violation(RAISED, None, sim.error))
    elif not sim.settled:
        found.append(
            Violation(
                SETTLED,
                None,
                f"still busy at {sim.now / 1e6:g}s of simulated time after {sim.events} events",
            )
        )
    orchestrator = sim.orchestrator
    sent = {
        send.idempotency_key
        for log in orchestrator.log.values()
        for entry in log
        for send in sends(entry.decision)
    }
    by_saga: dict[str, list[EffectRecord]] = {}
    for key, count in Counter(effect.key for effect in sim.effects).items():
        if count > 1:
            found.append(Violation(EFFECT_ONCE, None, f"{key} took effect {count} times"))
    for effect in sim.effects:
        if effect.key not in sent:
            found.append(Violation(UNEXPECTED_EFFECT, effect.saga_id, f"{effect.key} took effect"))
        by_saga.setdefault(effect.saga_id, []).append(effect)
    for spec in sim.sagas:
        found += _check_saga(sim, spec, by_saga.get(spec.saga_id, []))
    return found


def _check_saga(sim: Simulation, spec: SagaSpec, effects: list[EffectRecord]) -> list[Violation]:
    saga_id = spec.saga_id
    state = sim.orchestrator.states.get(saga_id)
    if state is None:
        return [Violation(TERMINAL, saga_id, "the saga was never started (its request was lost)")]
    found = _check_log(saga_id, sim.orchestrator.log[saga_id])
    status = state.status
    if not status.terminal:
        waiting = state.waiting_on()
        on = f" waiting on {waiting.name}" if waiting is not None else ""
        found.append(Violation(TERMINAL, saga_id, f"ended {status.value}{on}"))
    steps = spec.definition.steps
    names = [step.name for step in steps]
    actions = Counter(e.step for e in effects if e.kind is Kind.ACTION)
    undone = Counter(e.step for e in effects if e.kind is Kind.COMPENSATION)
    if status is SagaStatus.COMPLETED:
        once = {name: actions[name] for name in names if actions[name] != 1}
        if once:
            found.append(Violation(COMPLETED, saga_id, f"step effects (name: times) {once}"))
        if undone:
            found.append(Violation(COMPLETED, saga_id, f"compensation effects {dict(undone)}"))
    if status is SagaStatus.COMPENSATED:
        for step in steps:
            if step.compensation is not None and actions[step.name] and undone[step.name] != 1:
                detail = f"{step.name} took effect and was compensated {undone[step.name]} times"
                found.append(Violation(COMPENSATED, saga_id, detail))
    order = list(dict.fromkeys(e.step for e in effects if e.kind is Kind.COMPENSATION))
    if not _reversed(names, order):
        detail = f"compensated in the order {order}"
        found.append(Violation(COMPENSATION_ORDER, saga_id, detail))
    found += _check_compensations_follow_actions(saga_id, sim.orchestrator.log[saga_id], undone)
    if status is SagaStatus.FAILED:
        found += _check_failed(sim, spec, state)
    return found


def _reversed(names: list[str], order: list[str]) -> bool:
    positions = [names.index(name) for name in order]
    return positions == sorted(positions, reverse=True)


def _check_compensations_follow_actions(
    saga_id: str, log: Sequence[Committed], undone: Counter[str]
) -> list[Violation]:
    found = []
    actions_sent: set[str] = set()
    for entry in log:
        for send in sends(entry.decision):
            if send.kind is Kind.ACTION:
                actions_sent.add(send.step)
            elif send.step not in actions_sent:
                detail = f"compensation of {send.step} sent before any action of it"
                found.append(Violation(COMPENSATION_WITHOUT_ACTION, saga_id, detail))
    for name in undone:
        if name not in actions_sent:
            detail = f"{name} was compensated but its action never sent"
            found.append(Violation(COMPENSATION_WITHOUT_ACTION, saga_id, detail))
    return found


def _check_failed(sim: Simulation, spec: SagaSpec, state: SagaState) -> list[Violation]:
    failed = [
        index
        for index, step in enumerate(state.steps)
        if step.compensation is not None and step.compensation.status is CompensationStatus.FAILED
    ]
    if len(failed) != 1:
        detail = f"{len(failed)} compensations failed for good ({state.error})"
        return [Violation(FAILED_SAGA, spec.saga_id, detail)]
    index = failed[0]
    key = state.compensation_key(index)
    participant = sim.participants[spec.definition.steps[index].participant]
    stored = participant.inbox.get(key)
    if stored is None or stored[0] != FAILED:
        detail = f"failed on {key}, which its participant never refused for good"
        return [Violation(FAILED_SAGA, spec.saga_id, detail)]
    return []


def _check_log(saga_id: str, log: Sequence[Committed]) -> list[Violation]:
    """Each decision obeys the core's rules and starts from the last committed state; statuses
    only move forward and attempt counters never go down."""
    found = []
    last: SagaState | None = None
    for entry in log:
        now = clock_of(entry.at)
        after = entry.decision.state
        try:
            if entry.before is None or entry.event is None:
                check_start(entry.decision, now)
            else:
                check_decision(entry.before, entry.event, entry.decision, now, noise=False)
        except AssertionError as exc:
            detail = f"at {entry.at / 1e6:g}s on {entry.event}: {exc}"
            found.append(Violation(DECISION_RULES, saga_id, detail))
        if entry.before is not None:
            if last is not None and entry.before is not last and entry.before != last:
                detail = (
                    f"at {entry.at / 1e6:g}s the saga was decided from {_describe(entry.before)}, "
                    f"not from the last committed {_describe(last)}"
                )
                found.append(Violation(BACKWARDS, saga_id, detail))
            problem = _moved_back(entry.before, after)
            if problem is not None:
                found.append(Violation(BACKWARDS, saga_id, f"at {entry.at / 1e6:g}s {problem}"))
        last = after
    return found


def _moved_back(before: SagaState, after: SagaState) -> str | None:
    if after.status not in _SAGA_MOVES[before.status]:
        return f"the saga went from {before.status.value} to {after.status.value}"
    for old, new in zip(before.steps, after.steps, strict=True):
        if new.status not in _STEP_MOVES[old.status]:
            return f"step {old.name} went from {old.status.value} to {new.status.value}"
        if new.attempts < old.attempts or new.generation < old.generation:
            return f"step {old.name} went from attempt {old.attempts} to {new.attempts}"
        old_tries = old.compensation.attempts if old.compensation else 0
        new_tries = new.compensation.attempts if new.compensation else 0
        if new_tries < old_tries:
            return f"step {old.name}'s compensation went from attempt {old_tries} to {new_tries}"
    return None


def _describe(state: SagaState) -> str:
    steps = ", ".join(f"{s.name} {s.status.value} #{s.attempts}" for s in state.steps)
    return f"{state.status.value} ({steps})"


def rerun_command(seed: int) -> str:
    """The command that replays one seed with its event trace."""
    return (
        f"SAGA_SIM_SEED={seed} SAGA_SIM_VERBOSE=1 .venv/bin/pytest -q -s "
        "tests/unit/simulator/test_simulator_seeds.py"
    )


def report(seed: int, violations: Sequence[Violation]) -> str:
    """A failing seed as a sentence: the seed, each broken invariant, how to rerun it."""
    lines = [f"seed {seed} broke {len(violations)} invariant(s):"]
    lines += [f"  - {violation}" for violation in violations[:10]]
    if len(violations) > 10:
        lines.append(f"  ... and {len(violations) - 10} more")
    lines.append(f"rerun it with: {rerun_command(seed)}")
    return "\n".join(lines)
