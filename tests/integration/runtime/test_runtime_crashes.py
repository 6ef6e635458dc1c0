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
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from broker import RabbitService
from campaign import (
    TERMINAL,
    compare,
    completing_case,
    plan_case,
    rows,
    saga_states,
    unsent_commands,
    wait_all_terminal,
    wait_queues_empty,
)
from harness import PARTICIPANTS, Rig
from procs import Services, service_environ
from testapp import trio_input, trio_yaml

from orchestrator.stores.engine import create_engine
from orchestrator.stores.tables import instances, steps
from orchestrator.transport import Delivery
from orchestrator.transports.amqp import AmqpTransport
from participants.runtime import ParticipantService, ParticipantSettings

LONG_TIMEOUT = "120s"


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


# make test runs the same fault at CI size in tests/faults (R2); this longer run is for
# make test-faults.
@pytest.mark.faults
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
                # Early: the batch is done within a second or so.
                await asyncio.sleep(rng.uniform(0.05, 0.5))
                await orchestrator.kill()
                states = await saga_states(rig)
                in_flight_at_kills.append(
                    published - sum(1 for state in states.values() if state in TERMINAL)
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
    statement = sa.select(sa.func.count()).where(instances.c.state.not_in(sorted(TERMINAL)))
    deadline = time.monotonic() + within
    while True:
        [row] = await rows(rig.database_url, statement)
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


# make test covers this death at CI size in tests/faults (R3 participant.before_commit
# and R4); this run is for make test-faults.
@pytest.mark.faults
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
        [row] = await rows(url, _SLEEPING_HANDLERS)
        if row[0] >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{row[0]} of {count} slow handlers asleep after {within:g}s")
        await asyncio.sleep(0.05)


async def _attempts(rig: Rig, step: str) -> dict[str, int]:
    statement = sa.select(steps.c.saga_id, steps.c.attempts).where(steps.c.name == step)
    return {row.saga_id: row.attempts for row in await rows(rig.database_url, statement)}


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
