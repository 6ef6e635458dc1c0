"""One fault campaign: the orchestrator and the trio participants as real processes, a load of
sagas from the trio mix, faults injected by the caller, then the checker and a scoreboard.

The checker reports in Jepsen's categories: **lost** (a saga the orchestrator accepted that
is not in its database), **stuck** (not terminal by the deadline), **duplicated** effects
(one (saga, step, kind) committed twice), **unexpected** effects (a saga never started, or a
step or compensation its input does not lead to) and **wrong** outcomes (state or history
other than the input dictates). It also counts what the inboxes absorbed: commands answered
from a participant's inbox, replies the orchestrator had applied before. Recovery time per
fault is from the moment a service was back (restarted, reconnected) to the next saga event
committed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from broker import RabbitService
from campaign import TERMINAL, Case, Outcome, compare, plan_case, rows, saga_states
from harness import Rig
from procs import ProcessDied, ServiceProcess, Services, service_environ
from testapp import trio_yaml

from orchestrator import crashpoints
from orchestrator.stores.tables import history

SCALE_ENV = "SAGA_FAULTS_SCALE"
REPORT_ENV = "SAGA_FAULTS_REPORT"
PARTICIPANT_NAMES = ("alpha", "beta", "gamma")
MAX_IN_FLIGHT = 150
"""Open sagas the load keeps at most (RELIABILITY.md: at most 200 on 2 cores)."""
BATCH = 25


def full_scale() -> bool:
    """True under ``make test-faults`` (``SAGA_FAULTS_SCALE=full``)."""
    return os.environ.get(SCALE_ENV, "") == "full"


def scaled(ci: int, full: int) -> int:
    """``full`` under ``make test-faults``, ``ci`` otherwise."""
    return full if full_scale() else ci


@dataclass
class Fault:
    """One fault injected: what, when, and when the service was back."""

    kind: str
    at: datetime
    back_at: datetime | None = None


def now() -> datetime:
    """Wall-clock time in UTC (history times are UTC)."""
    return datetime.now(UTC)


@dataclass
class Report:
    """The scoreboard of one campaign."""

    campaign: str
    database: str
    seed: int
    sagas: int
    faults: int
    fault_kinds: dict[str, int]
    lost: int
    stuck: int
    duplicated: int
    unexpected: int
    wrong: int
    inbox_answers: int
    replies_dropped: int
    replies_ignored: int
    retries: int
    recovery_p50_s: float | None
    recovery_p99_s: float | None
    elapsed_s: float
    sagas_per_s: float
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One printable line of figures."""
        p50 = "-" if self.recovery_p50_s is None else f"{self.recovery_p50_s:.2f}s"
        p99 = "-" if self.recovery_p99_s is None else f"{self.recovery_p99_s:.2f}s"
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.fault_kinds.items())) or "none"
        return (
            f"[{self.campaign} on {self.database}, seed {self.seed}] {self.sagas} sagas,"
            f" {self.faults} faults ({kinds}): lost {self.lost}, stuck {self.stuck},"
            f" duplicated {self.duplicated}, unexpected {self.unexpected}, wrong {self.wrong};"
            f" inbox answered {self.inbox_answers} duplicates, {self.replies_dropped} replies"
            f" dropped as seen, {self.replies_ignored} ignored, {self.retries} retries;"
            f" recovery p50 {p50} p99 {p99}; {self.elapsed_s:.1f}s,"
            f" {self.sagas_per_s:.1f} sagas/s"
        )

    def check(self) -> None:
        """Fail unless nothing was lost, stuck, duplicated, unexpected or wrong."""
        print("\n" + self.line())
        path = os.environ.get(REPORT_ENV)
        if path:
            with Path(path).open("a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(self)) + "\n")
        bad = (self.lost, self.stuck, self.duplicated, self.unexpected, self.wrong)
        if any(bad):
            shown = "\n  ".join(self.problems[:15])
            raise AssertionError(f"{self.line()}\n  {shown}")


class FaultRig:
    """The processes of one campaign and the load they carry (see the module docstring)."""

    def __init__(
        self,
        tmp_path: Path,
        amqp_url: str,
        database_url: str,
        participant_database_url: str,
        rabbit: RabbitService,
        *,
        campaign: str,
        seed: int,
        definition: str | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.amqp_url = amqp_url
        self.database_url = database_url
        self.participant_database_url = participant_database_url
        self.rabbit = rabbit
        self.campaign = campaign
        self.seed = seed
        self.rng = random.Random(seed)
        self.definition = definition or trio_yaml(timeout="120s")
        self.faults: list[Fault] = []
        self.cases: dict[str, Case] = {}
        self.rig: Rig | None = None
        self.services: Services | None = None
        self.orchestrator: ServiceProcess | None = None
        self.participants: dict[str, ServiceProcess] = {}
        self._started_at = time.monotonic()

    # -- set-up ---------------------------------------------------------------------

    async def open(self, *, armed: dict[str, str] | None = None) -> None:
        """Migrate, then start the orchestrator and the three participants (ready);
        ``armed`` maps a process name to its ``SAGA_CRASH_AT``."""
        self.rig = await Rig.create(
            self.tmp_path,
            self.amqp_url,
            self.database_url,
            self.participant_database_url,
            definition=self.definition,
        )
        self.services = Services(
            self.tmp_path / "procs",
            service_environ(
                amqp_url=self.amqp_url,
                database_url=self.database_url,
                definitions_dir=self.rig.definitions_dir,
                participant_database_url=self.participant_database_url,
            ),
        )
        self.orchestrator = self.services.orchestrator()
        for name in PARTICIPANT_NAMES:
            self.participants[name] = self.services.participant(name)
        for process in self.processes:
            if armed and process.name in armed:
                process.env["SAGA_CRASH_AT"] = armed[process.name]
        await asyncio.gather(
            self.orchestrator.start_ready(),
            *(p.start_ready() for p in self.participants.values()),
        )
        self._started_at = time.monotonic()

    async def close(self) -> None:
        """Stop whatever still runs and close the rig's connections."""
        if self.services is not None:
            await self.services.close()
        if self.rig is not None:
            await self.rig.close()

    @property
    def processes(self) -> list[ServiceProcess]:
        """The orchestrator and the participants."""
        assert self.orchestrator is not None
        return [self.orchestrator, *self.participants.values()]

    # -- load -----------------------------------------------------------------------

    def plan(self, count: int) -> list[Case]:
        """``count`` sagas of the trio mix, drawn from the campaign's seed."""
        return [plan_case(self.rng) for _ in range(count)]

    async def wait_terminal(self, ids: Sequence[str], *, within: float = 120.0) -> None:
        """Poll until every saga in ``ids`` is terminal (no failure: the checker reports)."""
        assert self.rig is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            states = await saga_states(self.rig)
            if all(states.get(saga_id) in TERMINAL for saga_id in ids):
                return
            await asyncio.sleep(0.2)

    async def load(self, cases: Sequence[Case], *, saga: str = "trio") -> list[str]:
        """Start the sagas (of definition ``saga``) in batches, keeping at most MAX_IN_FLIGHT
        open; their ids."""
        ids: list[str] = []
        for start in range(0, len(cases), BATCH):
            batch = cases[start : start + BATCH]
            await self._until_open_below(MAX_IN_FLIGHT - len(batch))
            started = await self._start(batch, saga)
            self.cases.update(zip(started, batch, strict=True))
            ids.extend(started)
        return ids

    async def _start(self, batch: Sequence[Case], saga: str) -> list[str]:
        """Start a batch as a careful client would: each saga under an idempotency key, and
        the whole batch asked again (same keys: no saga twice) while the broker is down."""
        assert self.rig is not None
        keys = [f"{self.campaign}:{self.rng.getrandbits(64):016x}" for _ in batch]
        deadline = time.monotonic() + 120
        while True:
            try:
                return await self.rig.start([case.input for case in batch], keys=keys, saga=saga)
            except Exception as exc:  # the broker went away under the client: any failure
                if time.monotonic() > deadline:
                    raise
                print(f"starting a batch failed ({exc!r}); asking again")
                await self.rig.reset_client()
                await asyncio.sleep(1.0)

    async def _until_open_below(self, limit: int) -> None:
        while True:
            if await self._open_sagas() <= limit:
                return
            await asyncio.sleep(0.1)

    # -- faults ---------------------------------------------------------------------

    async def kill_and_restart(self, process: ServiceProcess, *, delay: float) -> Fault:
        """SIGKILL a service, start it again ``delay`` seconds later; the fault."""
        fault = Fault(f"kill {process.name}", now())
        self.faults.append(fault)
        await process.kill()
        await asyncio.sleep(delay)
        process.start()
        fault.back_at = now()
        await process.wait_ready(within=60)
        return fault

    async def crash_loop(
        self,
        process: ServiceProcess,
        point: str,
        *,
        crashes: int,
        hits: tuple[int, int],
        load: asyncio.Task[list[str]],
    ) -> int:
        """Let ``process`` die at ``point`` up to ``crashes`` times, restarting it each time
        armed for the n-th next arrival (n drawn from ``hits``); the last restart is
        unarmed. A run may die there before it is even ready (a sweep at start-up). Stops
        early when the load is done and no saga is open. Returns the crashes."""
        done = 0
        while done < crashes:
            run = process.current
            assert run is not None
            while run.exit_code is None:
                if load.done() and not await self._open_sagas():
                    process.env.pop("SAGA_CRASH_AT", None)
                    return done
                await asyncio.sleep(0.05)
            if run.exit_code != crashpoints.EXIT_CODE:
                raise AssertionError(
                    f"{process.name} exited with {run.exit_code}, not at the crash point"
                    f" {point}:\n" + process.run_log(run)[-3000:]
                )
            done += 1
            fault = Fault(f"crash at {point}", now())
            self.faults.append(fault)
            if done < crashes:
                process.env["SAGA_CRASH_AT"] = f"{point}@{self.rng.randint(*hits)}"
            else:
                process.env.pop("SAGA_CRASH_AT", None)
            await asyncio.sleep(self.rng.uniform(0.0, 0.5))
            process.start()
            fault.back_at = now()
            with contextlib.suppress(ProcessDied):  # died at the point while starting
                await process.wait_ready(within=60)
        return done

    async def _open_sagas(self) -> int:
        assert self.rig is not None
        states = await saga_states(self.rig)
        return sum(1 for state in states.values() if state not in TERMINAL)

    def note(self, kind: str, at: datetime, back_at: datetime | None) -> None:
        """Record a fault injected from outside the rig (the broker, the database)."""
        self.faults.append(Fault(kind, at, back_at))

    # -- the checker ----------------------------------------------------------------

    async def finish(
        self, ids: Sequence[str], *, within: float = 120.0, histories: bool = True
    ) -> Report:
        """Wait for every saga to end (up to ``within`` s), stop the services, check."""
        assert self.rig is not None
        await self.wait_terminal(ids, within=within)
        elapsed = time.monotonic() - self._started_at
        for process in self.processes:
            if process.running:
                code = await process.stop()
                assert code == 0, f"{process.name} did not stop cleanly (status {code})"
        outcome = await compare(self.rig, {i: self.cases[i] for i in ids}, histories=histories)
        return await self._report(ids, outcome, elapsed)

    async def _report(self, ids: Sequence[str], outcome: Outcome, elapsed: float) -> Report:
        assert self.rig is not None
        states = await saga_states(self.rig)
        lost = [i for i in ids if i not in states]
        stuck = [i for i in ids if i in states and states[i] not in TERMINAL]
        seen: Counter[tuple[str, str, str]] = Counter()
        unexpected: list[str] = []
        for row in await self.rig.effects():
            seen[(row.saga_id, row.step, row.kind)] += 1
            case = self.cases.get(row.saga_id)
            if case is None or (row.step, row.kind) not in case.effects:
                unexpected.append(f"effect {row.step}/{row.kind} for saga {row.saga_id}")
        duplicated = [f"{key} committed {n} times" for key, n in seen.items() if n > 1]
        problems = (
            [f"lost saga {i}" for i in lost]
            + [f"stuck saga {i} ({states[i]})" for i in stuck]
            + duplicated
            + unexpected
            + outcome.problems
        )
        # Sagas whose state, effects or history differ from the plan, beyond lost or stuck.
        wrong = {
            problem.split(" ")[1]
            for problem in outcome.problems
            if problem.startswith("saga ") and problem.split(" ")[1] not in {*lost, *stuck}
        }
        recovery = await self._recovery_times()
        kinds = Counter(fault.kind for fault in self.faults)
        return Report(
            campaign=self.campaign,
            database=self.database_url.split(":", 1)[0].split("+", 1)[0],
            seed=self.seed,
            sagas=len(ids),
            faults=len(self.faults),
            fault_kinds=dict(kinds),
            lost=len(lost),
            stuck=len(stuck),
            duplicated=len(duplicated),
            unexpected=len(unexpected),
            wrong=len(wrong),
            inbox_answers=self._count_in_logs(self.participants.values(), "from the inbox"),
            replies_dropped=self._count_in_logs(
                [self.orchestrator] if self.orchestrator else [], "this copy is dropped"
            ),
            replies_ignored=outcome.ignored_replies,
            retries=outcome.retries,
            recovery_p50_s=_percentile(recovery, 50),
            recovery_p99_s=_percentile(recovery, 99),
            elapsed_s=elapsed,
            sagas_per_s=len(ids) / elapsed if elapsed > 0 else 0.0,
            problems=problems,
        )

    @staticmethod
    def _count_in_logs(processes: Any, marker: str) -> int:
        return sum(process.log_text().count(marker) for process in processes)

    async def _recovery_times(self) -> list[float]:
        """Per fault: from the service being back to the next saga event committed."""
        assert self.rig is not None
        found = await rows(self.rig.database_url, sa.select(history.c.at).order_by(history.c.at))
        times = [row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC) for row in found]
        result = []
        for fault in self.faults:
            if fault.back_at is None:
                continue
            after = next((at for at in times if at >= fault.back_at), None)
            if after is not None:
                result.append((after - fault.back_at).total_seconds())
        return result


def _percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[pct - 1] if pct < 100 else max(values)
