"""The sagas of a crash or fault campaign and the checker of what came of them.

:func:`plan_case` draws a saga of the trio mix (plain, flaky, failing for good at b or c,
with or without a flaky compensation) and says exactly what must come of it: its final
state, the participants' effects in commit order, and its history. :func:`compare` reads
the orchestrator's and the participants' databases after a run and lists every way they
differ: a saga lost or in the wrong state, an effect missing, repeated or unexpected, a
history that went another way.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from broker import RabbitService
from harness import Rig
from testapp import trio_input

from orchestrator.core.state import SagaStatus
from orchestrator.stores.engine import create_engine
from orchestrator.stores.tables import history, instances, outbox
from orchestrator.topology import COMMANDS_EXCHANGE, participant_queue

Event = tuple[str, str | None, int | None]
"""A history entry as compared here: (type, step, attempt)."""
TERMINAL = {status.value for status in SagaStatus if status.terminal}


@dataclass(frozen=True)
class Case:
    """One saga of a test: its input and what must come of it."""

    kind: str
    input: dict[str, Any]
    status: SagaStatus
    effects: tuple[tuple[str, str], ...]
    """The participants' effects, (step, kind), in commit order."""
    history: tuple[Event, ...]
    """The saga's history, ``reply_ignored`` entries left out."""


def _action(step: str, *, flaky: bool = False, fails: bool = False) -> list[Event]:
    if fails:
        return [("step_sent", step, 1), ("step_failed", step, 1)]
    if flaky:
        return [
            ("step_sent", step, 1),
            ("step_failed", step, 1),
            ("step_sent", step, 2),
            ("step_succeeded", step, 2),
        ]
    return [("step_sent", step, 1), ("step_succeeded", step, 1)]


def _undo(step: str, *, flaky: bool = False) -> list[Event]:
    if flaky:
        return [
            ("compensation_sent", step, 1),
            ("compensation_failed", step, 1),
            ("compensation_sent", step, 2),
            ("compensation_succeeded", step, 2),
        ]
    return [("compensation_sent", step, 1), ("compensation_succeeded", step, 1)]


def plan_case(rng: random.Random) -> Case:
    """A saga of the mix: ~10% fail for good at b (a is undone), ~5% at c (b then a are
    undone, half of them with a compensation that fails once), ~10% fail once somewhere,
    the rest plain."""
    started: list[Event] = [("started", None, None)]
    draw = rng.random()
    if draw < 0.10:
        return Case(
            "fail_b",
            trio_input(b={"fail": "permanent"}),
            SagaStatus.COMPENSATED,
            (("a", "action"), ("a", "compensation")),
            tuple(
                started
                + _action("a")
                + _action("b", fails=True)
                + _undo("a")
                + [("compensated", None, None)]
            ),
        )
    if draw < 0.15:
        flaky_undo = rng.random() < 0.5
        behaviours: dict[str, dict[str, Any]] = {"c": {"fail": "permanent"}}
        if flaky_undo:
            behaviours["undo_b"] = {"fail_times": 1}
        return Case(
            "fail_c" + ("_flaky_undo" if flaky_undo else ""),
            trio_input(**behaviours),
            SagaStatus.COMPENSATED,
            (("a", "action"), ("b", "action"), ("b", "compensation"), ("a", "compensation")),
            tuple(
                started
                + _action("a")
                + _action("b")
                + _action("c", fails=True)
                + _undo("b", flaky=flaky_undo)
                + _undo("a")
                + [("compensated", None, None)]
            ),
        )
    return completing_case(rng.choice("abc") if draw < 0.25 else None)


def completing_case(flaky: str | None = None) -> Case:
    """A saga that completes; with ``flaky``, that step fails once first."""
    inputs = {flaky: {"fail_times": 1}} if flaky else {}
    return Case(
        f"flaky_{flaky}" if flaky else "plain",
        trio_input(**inputs),
        SagaStatus.COMPLETED,
        (("a", "action"), ("b", "action"), ("c", "action")),
        tuple(
            [("started", None, None)]
            + [event for step in "abc" for event in _action(step, flaky=step == flaky)]
            + [("completed", None, None)]
        ),
    )


async def rows(url: str, statement: sa.Executable) -> list[sa.Row[Any]]:
    """The rows a statement reads from the database at ``url`` (its own engine)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(statement))
    finally:
        await engine.dispose()


async def saga_states(rig: Rig) -> dict[str, str]:
    """Every saga in the orchestrator's database: id -> state."""
    found = await rows(rig.database_url, sa.select(instances.c.id, instances.c.state))
    return {row.id: str(getattr(row.state, "value", row.state)) for row in found}


async def unsent_commands(rig: Rig) -> int:
    """Commands in the outbox that the broker has not confirmed (as far as the row says)."""
    statement = sa.select(sa.func.count()).where(
        outbox.c.sent_at.is_(None), outbox.c.exchange == COMMANDS_EXCHANGE
    )
    [row] = await rows(rig.database_url, statement)
    return int(row[0])


async def wait_all_terminal(rig: Rig, saga_ids: Sequence[str], *, within: float) -> float:
    """Poll until every saga is terminal; the seconds that took. Fails naming stragglers."""
    started = time.monotonic()
    wanted = set(saga_ids)
    while True:
        states = await saga_states(rig)
        open_ = {i: states.get(i) for i in wanted if states.get(i) not in TERMINAL}
        if not open_:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            sample = sorted(open_)[:5]
            last = await _last_events(rig, sample)
            shown = "\n  ".join(f"{i}: {open_[i]}, last event {last.get(i)}" for i in sample)
            raise AssertionError(f"{len(open_)} sagas not terminal after {within:g}s:\n  {shown}")
        await asyncio.sleep(0.1)


async def _last_events(rig: Rig, saga_ids: Sequence[str]) -> dict[str, Event]:
    statement = (
        sa.select(history.c.saga_id, history.c.type, history.c.step, history.c.attempt)
        .where(history.c.saga_id.in_(saga_ids))
        .order_by(history.c.saga_id, history.c.seq)
    )
    return {
        row.saga_id: (str(getattr(row.type, "value", row.type)), row.step, row.attempt)
        for row in await rows(rig.database_url, statement)
    }


async def wait_queues_empty(
    rabbit: RabbitService, amqp_url: str, names: Iterable[str], *, within: float = 30.0
) -> None:
    """Poll until the participants' queues hold nothing, ready or unacknowledged: every
    command was handled and acked, so the effects are final."""
    vhost = unquote(urlsplit(amqp_url).path[1:])
    queues = {participant_queue(name) for name in names}
    deadline = time.monotonic() + within
    while True:
        listing = await rabbit.rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "messages")
        counts = {
            parts[0]: int(parts[1])
            for parts in (line.split() for line in listing.splitlines())
            if len(parts) == 2 and parts[0] in queues
        }
        if all(counts.get(queue) == 0 for queue in queues):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"participant queues not drained after {within:g}s: {counts}")
        await asyncio.sleep(0.2)


@dataclass
class Outcome:
    """What the databases say happened, compared with the cases."""

    problems: list[str] = field(default_factory=list)
    ignored_replies: int = 0
    retries: int = 0
    """Attempts after the first, as the histories show."""

    def check(self) -> None:
        """Fail listing the first problems, if there are any."""
        if self.problems:
            shown = "\n  ".join(self.problems[:12])
            raise AssertionError(f"{len(self.problems)} problems:\n  {shown}")


async def compare(rig: Rig, cases: Mapping[str, Case], *, histories: bool = True) -> Outcome:
    """Check every saga's state, its effects (exactly once, in order) and its history."""
    outcome = Outcome()
    problems = outcome.problems
    states = await saga_states(rig)
    if set(states) != set(cases):
        problems.append(
            f"{len(states)} sagas in the database, {len(cases)} started;"
            f" unknown: {sorted(set(states) - set(cases))[:3]},"
            f" missing: {sorted(set(cases) - set(states))[:3]}"
        )
    effects: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in await rig.effects():
        effects[row.saga_id].append((row.step, row.kind))
    strangers = set(effects) - set(cases)
    if strangers:
        problems.append(f"effects for sagas that were never started: {sorted(strangers)[:3]}")
    events: dict[str, list[Event]] = defaultdict(list)
    statement = sa.select(
        history.c.saga_id, history.c.type, history.c.step, history.c.attempt
    ).order_by(history.c.saga_id, history.c.seq)
    for row in await rows(rig.database_url, statement):
        kind = str(getattr(row.type, "value", row.type))
        if kind == "reply_ignored":
            outcome.ignored_replies += 1
            continue
        if kind in ("step_sent", "compensation_sent") and (row.attempt or 0) > 1:
            outcome.retries += 1
        events[row.saga_id].append((kind, row.step, row.attempt))
    for saga_id, case in cases.items():
        state = states.get(saga_id)
        if state != case.status.value:
            problems.append(f"saga {saga_id} ({case.kind}) is {state}, not {case.status.value}")
        if effects.get(saga_id, []) != list(case.effects):
            problems.append(
                f"saga {saga_id} ({case.kind}): effects {effects.get(saga_id, [])},"
                f" expected exactly {list(case.effects)}"
            )
        # Any attempt under the step's key may deliver its success (a command published
        # again is answered from the inbox), so which attempt's success came first is a race.
        got, expected = _settled(events[saga_id]), _settled(list(case.history))
        if histories and got != expected:
            at = _first_difference(got, expected)
            problems.append(
                f"saga {saga_id} ({case.kind}): history differs from event {at + 1}:"
                f" {got[at : at + 6]}, expected {expected[at : at + 6]}"
            )
    return outcome


def _first_difference(got: Sequence[Event], expected: Sequence[Event]) -> int:
    for index, (one, other) in enumerate(zip(got, expected, strict=False)):
        if one != other:
            return index
    return min(len(got), len(expected))


def _settled(history: list[Event]) -> list[Event]:
    """A history with the attempt of each success left out (see :func:`compare`)."""
    return [
        (kind, step, None if kind.endswith("_succeeded") else attempt)
        for kind, step, attempt in history
    ]
