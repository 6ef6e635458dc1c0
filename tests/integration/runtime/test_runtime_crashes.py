"""Crash tests with real processes: the orchestrator and a participant are SIGKILLed at seeded
random moments while sagas are in flight, and nothing may be lost or done twice.

Each test prints its seed; ``SAGA_TEST_SEED=<seed>`` repeats its fault schedule and its mix
of sagas. Figures (kills, duplicates the inboxes answered, redeliveries, recovery time) are
printed too: run with ``-s`` to see them when the tests pass.

Step timeouts are long here (120 s, beyond what the tests wait) unless the test is about a
participant's crash: a lost command or reply then shows as a saga that never ends, instead
of being papered over by a timeout's retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import sqlalchemy as sa
from broker import RabbitService
from harness import PARTICIPANTS, Rig
from procs import Services, service_environ
from testapp import trio_input, trio_yaml

from orchestrator.core.state import SagaStatus
from orchestrator.stores.engine import create_engine
from orchestrator.stores.tables import history, instances, outbox, steps
from orchestrator.topology import COMMANDS_EXCHANGE, participant_queue
from orchestrator.transport import Delivery
from orchestrator.transports.amqp import AmqpTransport
from participants.runtime import ParticipantService, ParticipantSettings

SEED_ENV = "SAGA_TEST_SEED"
LONG_TIMEOUT = "120s"

Event = tuple[str, str | None, int | None]
"""A history entry as compared here: (type, step, attempt)."""
_TERMINAL = {status.value for status in SagaStatus if status.terminal}


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """The seed of the test's randomness: ``SAGA_TEST_SEED`` or a fresh one, printed."""
    raw = os.environ.get(SEED_ENV)
    value = int(raw) if raw else secrets.randbits(32)
    print(f"\n{request.node.name}: seed {value} (repeat with {SEED_ENV}={value})")
    return value


# -- what each saga must come to ----------------------------------------------------


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


# -- participants in this process, counting what they receive -----------------------


class CountingParticipant(ParticipantService):
    """A participant service that also counts its deliveries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliveries = 0
        self.redelivered = 0
        """Deliveries the broker flagged as redelivered."""
        self.message_ids: Counter[str] = Counter()

    async def handle(self, delivery: Delivery) -> None:
        """Count, then handle as usual."""
        self.deliveries += 1
        self.redelivered += delivery.redelivered
        self.message_ids[delivery.message_id or ""] += 1
        await super().handle(delivery)

    @property
    def repeated(self) -> int:
        """Deliveries of a message id this participant had already received (a command the
        outbox published again, or the broker delivered again)."""
        return sum(count - 1 for count in self.message_ids.values())


async def start_participants(
    rig: Rig, names: Iterable[str] = PARTICIPANTS
) -> dict[str, CountingParticipant]:
    """Start counting test participants in this process (the rig stops them)."""
    started = {}
    for name in names:
        settings = ParticipantSettings(
            amqp_url=rig.amqp_url, database_url=rig.participant_database_url
        )
        transport = AmqpTransport(rig.amqp_url, name=f"test-{name}")
        await transport.connect()
        service = CountingParticipant(
            PARTICIPANTS[name], settings, create_engine(settings.database_url), transport
        )
        await service.start()
        rig.participants[name] = service
        started[name] = service
    return started


# -- reading the outcome --------------------------------------------------------------


async def _rows(url: str, statement: sa.Executable) -> list[sa.Row[Any]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(statement))
    finally:
        await engine.dispose()


async def saga_states(rig: Rig) -> dict[str, str]:
    """Every saga in the orchestrator's database: id -> state."""
    rows = await _rows(rig.database_url, sa.select(instances.c.id, instances.c.state))
    return {row.id: str(getattr(row.state, "value", row.state)) for row in rows}


async def unsent_commands(rig: Rig) -> int:
    """Commands in the outbox that the broker has not confirmed (as far as the row says)."""
    statement = sa.select(sa.func.count()).where(
        outbox.c.sent_at.is_(None), outbox.c.exchange == COMMANDS_EXCHANGE
    )
    [row] = await _rows(rig.database_url, statement)
    return int(row[0])


async def wait_all_terminal(rig: Rig, saga_ids: Sequence[str], *, within: float) -> float:
    """Poll until every saga is terminal; the seconds that took. Fails naming stragglers."""
    started = time.monotonic()
    wanted = set(saga_ids)
    while True:
        states = await saga_states(rig)
        open_ = {i: states.get(i) for i in wanted if states.get(i) not in _TERMINAL}
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
        for row in await _rows(rig.database_url, statement)
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
    for row in await _rows(rig.database_url, statement):
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
        if histories and events[saga_id] != list(case.history):
            got, expected = events[saga_id], list(case.history)
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


def _participant_figures(participants: Mapping[str, CountingParticipant]) -> str:
    services = participants.values()
    return (
        f"handler runs {sum(p.handler_runs for p in services)},"
        f" duplicates answered by the inboxes {sum(p.inbox_answers for p in services)},"
        f" commands received again {sum(p.repeated for p in services)}"
        f" (flagged redelivered by the broker: {sum(p.redelivered for p in services)})"
    )


# -- 1. the orchestrator, killed again and again --------------------------------------

SAGAS_UNDER_KILLS = 200


@pytest.mark.timeout(150)
async def test_orchestrator_killed_repeatedly_loses_and_duplicates_nothing(
    tmp_path: Path,
    amqp_url: str,
    database_url: str,
    participant_database_url: str,
    rabbit_service: RabbitService,
    seed: int,
) -> None:
    rng = random.Random(seed)
    rig = await Rig.create(
        tmp_path,
        amqp_url,
        database_url,
        participant_database_url,
        definition=trio_yaml(timeout=LONG_TIMEOUT),
    )
    services = Services(
        tmp_path / "procs",
        service_environ(
            amqp_url=amqp_url,
            database_url=database_url,
            definitions_dir=rig.definitions_dir,
            participant_database_url=participant_database_url,
        ),
    )
    orchestrator = services.orchestrator()
    starts: list[asyncio.Task[list[str]]] = []
    try:
        with services.logs_on_failure():
            participants = await start_participants(rig)
            await orchestrator.start_ready()
            cases = [plan_case(rng) for _ in range(SAGAS_UNDER_KILLS)]
            kills = rng.randint(3, 5)
            size = -(-len(cases) // kills)
            batches = [cases[i : i + size] for i in range(0, len(cases), size)]
            in_flight_at_kills: list[int] = []
            unsent_at_kills: list[int] = []
            published = 0
            for batch in batches:
                # Each batch is published, then the orchestrator dies at a seeded moment
                # while it works on it (and on the backlog the earlier kills left).
                starts.append(asyncio.create_task(rig.start([case.input for case in batch])))
                published += len(batch)
                await asyncio.sleep(rng.uniform(0.3, 2.0))
                await orchestrator.kill()
                states = await saga_states(rig)
                in_flight_at_kills.append(
                    published - sum(1 for state in states.values() if state in _TERMINAL)
                )
                unsent_at_kills.append(await unsent_commands(rig))
                await asyncio.sleep(rng.uniform(0.0, 1.0))
                await orchestrator.start_ready()
            last_restart = time.monotonic()
            ids = [saga_id for task in starts for saga_id in await task]
            await wait_all_terminal(rig, ids, within=60)
            recovery = time.monotonic() - last_restart
            assert await orchestrator.stop() == 0, "the orchestrator did not stop cleanly"
            await wait_queues_empty(rabbit_service, amqp_url, participants)
            outcome = await compare(rig, dict(zip(ids, cases, strict=True)))
            print(
                f"{len(ids)} sagas ({dict(Counter(case.kind for case in cases))}),"
                f" {orchestrator.kills} SIGKILLs of the orchestrator with"
                f" {in_flight_at_kills} sagas in flight and {unsent_at_kills} commands not"
                f" marked sent; {_participant_figures(participants)};"
                f" retries {outcome.retries}, replies ignored {outcome.ignored_replies};"
                f" all terminal {recovery:.1f}s after the last restart"
            )
            assert all(count > 0 for count in in_flight_at_kills), (
                f"a kill found no saga in flight ({in_flight_at_kills}): the fault schedule"
                " missed; the batches must be larger or the kills earlier"
            )
            assert orchestrator.kills == kills
            outcome.check()
            # Last, as it is about waste rather than correctness: after a restart only what
            # the kill left unconfirmed may be published again.
            again = sum(p.repeated - p.redelivered for p in participants.values())
            assert again <= sum(unsent_at_kills), (
                f"the participants received {again} commands a second time, but the kills"
                f" left only {sum(unsent_at_kills)} commands unconfirmed in the outbox: a"
                " restarted orchestrator published again rows it was publishing anyway"
            )
    finally:
        for task in starts:
            task.cancel()
        await services.close()
        await rig.close()


# -- 2. two orchestrators on one database ----------------------------------------------

SAGAS_TWO_ORCHESTRATORS = 500
START_BATCH = 50
"""Sagas per batch of start requests."""
MAX_OPEN = 150
"""Open sagas below which the next batch starts."""
DOUBLED = 0.3
"""The share of sagas asked for twice under the same key."""


async def _until_open_below(rig: Rig, limit: int, *, within: float = 60.0) -> None:
    statement = sa.select(sa.func.count()).where(instances.c.state.not_in(sorted(_TERMINAL)))
    deadline = time.monotonic() + within
    while True:
        [row] = await _rows(rig.database_url, statement)
        if row[0] < limit:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{row[0]} sagas still open after {within:g}s")
        await asyncio.sleep(0.1)


@pytest.mark.postgres
@pytest.mark.timeout(150)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_orchestrators_on_one_postgres_execute_each_step_once(
    tmp_path: Path,
    amqp_url: str,
    database_url: str,
    participant_database_url: str,
    rabbit_service: RabbitService,
    seed: int,
) -> None:
    rng = random.Random(seed)
    rig = await Rig.create(
        tmp_path,
        amqp_url,
        database_url,
        participant_database_url,
        definition=trio_yaml(timeout=LONG_TIMEOUT),
    )
    try:
        first = await rig.start_orchestrator()
        second = await rig.start_orchestrator()
        participants = await start_participants(rig)
        cases = [plan_case(rng) for _ in range(SAGAS_TWO_ORCHESTRATORS)]
        keys = [f"order-{number}" for number in range(len(cases))]
        # Some sagas are asked for twice under their key, the two requests shuffled among
        # the others, so the two orchestrators also race to create the same saga. A batch
        # goes out when few sagas are open: this one process runs two orchestrators, three
        # participants and the starter, and once it is overloaded the outbox sweeps publish
        # again rows whose first publish is still under way, which then dominates the run.
        order: list[int] = []
        replies: list[str] = []
        began = time.monotonic()
        for first_number in range(0, len(cases), START_BATCH):
            numbers = range(first_number, min(first_number + START_BATCH, len(cases)))
            batch = [n for n in numbers for _ in range(2 if rng.random() < DOUBLED else 1)]
            rng.shuffle(batch)
            await _until_open_below(rig, MAX_OPEN)
            replies += await rig.start(
                [cases[number].input for number in batch], keys=[keys[number] for number in batch]
            )
            order += batch
        sagas_of: dict[int, set[str]] = defaultdict(set)
        for number, saga_id in zip(order, replies, strict=True):
            sagas_of[number].add(saga_id)
        doubled = {keys[n]: ids for n, ids in sagas_of.items() if len(ids) != 1}
        assert not doubled, f"one key, several sagas: {dict(list(doubled.items())[:3])}"
        by_id = {next(iter(sagas_of[number])): case for number, case in enumerate(cases)}
        await wait_all_terminal(rig, list(by_id), within=100)
        elapsed = time.monotonic() - began
        await wait_queues_empty(rabbit_service, amqp_url, participants)
        outcome = await compare(rig, by_id)
        print(
            f"{len(by_id)} sagas from {len(order)} start requests, all terminal in"
            f" {elapsed:.1f}s; messages published by the orchestrators:"
            f" {first.relay.published} and {second.relay.published}, timers fired:"
            f" {first.timers.fired} and {second.timers.fired};"
            f" {_participant_figures(participants)}; retries {outcome.retries},"
            f" replies ignored {outcome.ignored_replies}"
        )
        assert first.relay.published > 0, "the first orchestrator did nothing"
        assert second.relay.published > 0, "the second orchestrator did nothing"
        outcome.check()
    finally:
        await rig.close()


# -- 3. a participant, killed in the middle of its handlers -------------------------

_SLEEPING_HANDLERS = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND state = 'idle in transaction' AND now() - state_change > interval '200 milliseconds'"
)
"""Participant transactions idle for a while: a handler sleeping between the inbox claim
and its commit (the other handlers never wait inside their transaction)."""

SLOW_SECONDS = 3.0


@pytest.mark.postgres
@pytest.mark.timeout(150)
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_participant_killed_mid_handler_effect_happens_once(
    tmp_path: Path,
    amqp_url: str,
    database_url: str,
    participant_database_url: str,
    rabbit_service: RabbitService,
    seed: int,
) -> None:
    rng = random.Random(seed)
    # Short timeouts on purpose: while beta is down the orchestrator sends new attempts,
    # which must meet the inbox (or the attempt still running) rather than a second run.
    rig = await Rig.create(
        tmp_path,
        amqp_url,
        database_url,
        participant_database_url,
        definition=trio_yaml(timeout="5s", max_attempts=8),
    )
    services = Services(
        tmp_path / "procs",
        service_environ(
            amqp_url=amqp_url,
            database_url=database_url,
            definitions_dir=rig.definitions_dir,
            participant_database_url=participant_database_url,
        ),
    )
    beta = services.participant("beta")
    stopped = asyncio.Event()
    supervisor: asyncio.Task[None] | None = None
    try:
        with services.logs_on_failure():
            await rig.start_orchestrator()
            participants = await start_participants(rig, ["alpha", "gamma"])
            await beta.start_ready()
            # Its own generator: the restarts draw at moments that vary from run to run.
            restarts = random.Random(rng.getrandbits(32))
            supervisor = asyncio.create_task(
                beta.keep_running(stopped, lambda: restarts.uniform(0.0, 1.0))
            )
            # 1. SIGKILL while slow handlers sleep inside their transactions.
            slow = [trio_input(b={"delay_first": SLOW_SECONDS}) for _ in range(3)]
            plain = [trio_input() for _ in range(5)]
            first_ids = await rig.start(slow + plain)
            slow_ids = first_ids[: len(slow)]
            await _until_sleeping(participant_database_url, len(slow))
            await asyncio.sleep(rng.uniform(0.0, 1.0))  # fault schedule: into the sleep
            await beta.kill()
            done = {(row.saga_id, row.step) for row in await rig.effects()}
            assert not {(saga_id, "b") for saga_id in slow_ids} & done, (
                "a slow handler finished before the kill: the kill was not mid-handler"
            )
            # 2. Handlers that kill their own process before they commit, one crash each.
            markers = [tmp_path / f"crash-{number}" for number in range(4)]
            second = [trio_input(b={"exit_once": str(marker)}) for marker in markers]
            second += [trio_input() for _ in range(8)]
            rng.shuffle(second)
            second_ids = await rig.start(second)
            ids = first_ids + second_ids
            await wait_all_terminal(rig, ids, within=90)
            await wait_queues_empty(rabbit_service, amqp_url, ["alpha", "beta", "gamma"])
            stopped.set()
            await supervisor
            assert await beta.stop() == 0, "beta did not stop cleanly"
            cases = {saga_id: completing_case() for saga_id in ids}
            outcome = await compare(rig, cases, histories=False)
            attempts = await _attempts(rig, "b")
            print(
                f"{len(ids)} sagas; beta ran {len(beta.runs)} times: {beta.kills} SIGKILL"
                f" mid-handler ({len(slow)} handlers asleep), {beta.crashes} crashes of its"
                f" own; attempts of step b: {dict(sorted(Counter(attempts.values()).items()))}"
                f" (sagas per attempt count); retries {outcome.retries}, replies ignored"
                f" {outcome.ignored_replies}; alpha and gamma:"
                f" {_participant_figures(participants)}"
            )
            assert all(marker.exists() for marker in markers), "a crashing handler never ran"
            assert beta.kills == 1
            assert beta.crashes == len(markers), "each crashing handler kills beta once"
            outcome.check()
    finally:
        stopped.set()
        if supervisor is not None:
            # Its failure, if any, already showed as sagas that never ended.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(supervisor, 60)
        await services.close()
        await rig.close()


async def _until_sleeping(url: str, count: int, *, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        [row] = await _rows(url, _SLEEPING_HANDLERS)
        if row[0] >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{row[0]} of {count} slow handlers asleep after {within:g}s")
        await asyncio.sleep(0.05)


async def _attempts(rig: Rig, step: str) -> dict[str, int]:
    statement = sa.select(steps.c.saga_id, steps.c.attempts).where(steps.c.name == step)
    return {row.saga_id: row.attempts for row in await _rows(rig.database_url, statement)}


@pytest.mark.postgres
async def test_two_orchestrators_racing_on_one_key_answer_without_an_error(
    tmp_path: Path,
    amqp_url: str,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Requests for one key that reach both orchestrators at once: one saga, every request
    answered, and no consumer handler failing on the way (a failure is logged with its
    traceback and requeues the request, counting against the queue's delivery limit)."""
    rig = await Rig.create(tmp_path, amqp_url, postgres_url, postgres_url)
    try:
        await rig.start_orchestrator()
        await rig.start_orchestrator()
        keys = [f"race-{number}" for number in range(40) for _ in range(4)]
        ids = await rig.start([trio_input() for _ in keys], keys=keys)
        sagas_of: dict[str, set[str]] = defaultdict(set)
        for key, saga_id in zip(keys, ids, strict=True):
            sagas_of[key].add(saga_id)
        assert all(len(found) == 1 for found in sagas_of.values())
        raised = [
            (record.getMessage(), record.exc_info[1])
            for record in caplog.records
            if record.name.startswith("orchestrator") and record.exc_info
        ]
        assert not raised, (
            f"{len(raised)} start requests failed in a consumer and were requeued;"
            f" the first: {raised[0][0]!r}: {raised[0][1]!r}"
        )
    finally:
        await rig.close()
