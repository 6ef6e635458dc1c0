"""Timeouts, retries, compensations, poison and replay under load (R10, R11, R12).

One campaign mixes the ordinary trio sagas with the variants RELIABILITY.md names: a reply
delayed past the step's timeout (a late reply after the retry was sent), a compensation that
fails three times before it succeeds, a compensation that always fails (the saga waits for
an operator as ``failed``). Then poison, beside ordinary sagas: a command that kills its
participant on every delivery. Beta dead-letters the poison itself once it has died on it
three times (the last two while it took commands one at a time, as a restarted process
does until its redelivered commands are through), before the queue's delivery limit could
also take the commands in flight beside it; the poisoned saga times out and is compensated,
and the others go on untouched. Then the
bug is "fixed" and the DLQ replayed with the real ``saga dlq`` command: each replayed command
is answered once (here: as cancelled, since its step was compensated first), a second
replay finds nothing, and no effect happens twice.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from campaign import Case
from procs import RUNTIME_DIR
from testapp import trio_input

from orchestrator.core.state import SagaStatus
from orchestrator.topology import participant_queue

from .conftest import MakeRig
from .faultrig import FaultRig, scaled

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(1800)]

# The variants that need b to time out run on trio_short, where b waits 5 s for a reply;
# the ordinary sagas run on trio (trio_yaml, 120 s timeouts), so that beta's restarts while
# it dies on the poison delay them without timing them out.
SHORT_B_YAML = """\
name: trio_short
version: 1
defaults:
  timeout: 60s
  retry:
    max_attempts: 3
    backoff: {initial: 50ms, multiplier: 2, max: 500ms}
steps:
  - name: a
    participant: alpha
    command: do
    payload:
      behaviour: ${input.a}
    compensation:
      command: undo
      payload:
        behaviour: ${input.undo_a}
  - name: b
    participant: beta
    command: do
    timeout: 5s
    payload:
      behaviour: ${input.b}
    compensation:
      command: undo
      payload:
        behaviour: ${input.undo_b}
  - name: c
    participant: gamma
    command: do
    payload:
      behaviour: ${input.c}
"""

A, B, C = ("a", "action"), ("b", "action"), ("c", "action")
UNDO_A, UNDO_B = ("a", "compensation"), ("b", "compensation")


def _case(
    kind: str, status: SagaStatus, effects: tuple[tuple[str, str], ...], **inputs: Any
) -> Case:
    return Case(kind, trio_input(**inputs), status, effects, ())


def compensation_variants() -> list[Case]:
    """The compensation variants (on trio)."""
    return [
        _case(
            "compensation_fails_3x",
            SagaStatus.COMPENSATED,
            (A, B, UNDO_B, UNDO_A),
            c={"fail": "permanent"},
            undo_a={"fail_times": 3},
        ),
        _case(
            "compensation_always_fails",
            SagaStatus.FAILED,
            (A, B, UNDO_B),
            c={"fail": "permanent"},
            undo_a={"fail": "permanent"},
        ),
    ]


def timeout_variants(poison_file: Path, *, late: bool = True, poison: bool = True) -> list[Case]:
    """The variants whose b must time out (on trio_short)."""
    cases = []
    if late:
        cases.append(_case("late_reply", SagaStatus.COMPLETED, (A, B, C), b={"delay_first": 7}))
    if poison:
        # The poison never runs b's action: b times out (effect possible), so b is
        # compensated first (its compensation cancels the action's key), then a.
        cases.append(
            _case(
                "poison",
                SagaStatus.COMPENSATED,
                (A, UNDO_B, UNDO_A),
                b={"exit_until_file": str(poison_file)},
            )
        )
    return cases


def saga_cli(env: dict[str, str], *args: str) -> str:
    """Run ``saga ARGS`` as an operator would; its stdout (fails on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=RUNTIME_DIR,
    )
    assert done.returncode == 0, f"saga {' '.join(args)} exited {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_r10_to_r12_timeouts_compensations_poison_and_replay(
    make_rig: MakeRig, tmp_path: Path
) -> None:
    poison_file = tmp_path / "beta-fixed"
    rig = make_rig("R10-R12 semantics, poison, replay")
    (tmp_path / "sagas").mkdir(exist_ok=True)
    (tmp_path / "sagas" / "trio_short.yaml").write_text(SHORT_B_YAML)
    stopped = asyncio.Event()
    restarts: asyncio.Task[None] | None = None
    try:
        await rig.open()
        beta = rig.participants["beta"]
        # beta dies on every poison delivery: start it again each time, as a supervisor would.
        restarts = asyncio.create_task(beta.keep_running(stopped, lambda: 0.2))
        rounds = range(scaled(1, 5))
        # First the timeouts, retries and compensations, with beta healthy: a late reply
        # needs beta to answer the retry within b's 5 s, which a poison storm would prevent.
        mixed = rig.plan(scaled(40, 300)) + [c for _ in rounds for c in compensation_variants()]
        rig.rng.shuffle(mixed)
        late = [case for _ in rounds for case in timeout_variants(poison_file, poison=False)]
        started = list(await asyncio.gather(rig.load(mixed), rig.load(late, saga="trio_short")))
        await rig.wait_terminal([saga_id for batch in started for saga_id in batch], within=300)
        # Then the poison, with ordinary sagas in flight beside it on beta: bystanders that
        # must neither be dead-lettered nor fail.
        bystanders = rig.plan(scaled(20, 100))
        poison = [case for _ in rounds for case in timeout_variants(poison_file, late=False)]
        started += await asyncio.gather(rig.load(bystanders), rig.load(poison, saga="trio_short"))
        ids = [saga_id for batch in started for saga_id in batch]
        await rig.wait_terminal(ids, within=300)
        poisoned = [i for i in ids if rig.cases[i].kind == "poison"]

        env = dict(beta.env)
        # The sagas end (timed out, compensated) before beta is through the poison commands
        # still queued: each costs up to three deaths, one command at a time.
        await _until_queue_empty(rig, participant_queue("beta"), within=300)
        listing = json.loads(saga_cli(env, "dlq", "list", "--json"))
        beta_dead = [row for row in listing if row["queue"] == participant_queue("beta")]
        # Each poisoned saga sent three attempts. An attempt is dead-lettered by beta once it
        # has died on it three times, before the broker's delivery limit could also take the
        # commands in flight beside it (none of those may be in the DLQ); an attempt that
        # beta reaches only after the step's compensation is answered from the inbox as
        # cancelled, without running.
        assert all("poison message" in row["reason"] for row in beta_dead), beta_dead
        assert len(listing) == len(beta_dead), f"unexpected dead letters: {listing}"
        per_saga = Counter(row["saga_id"] for row in beta_dead)
        assert set(per_saga) <= set(poisoned), per_saga
        assert beta_dead, "no poison command was dead-lettered"
        assert max(per_saga.values()) <= 3, per_saga

        poison_file.write_text("fixed")
        replayed = saga_cli(env, "dlq", "replay", "--all").splitlines()
        assert len(replayed) == len(beta_dead), replayed
        again = saga_cli(env, "dlq", "replay", "--all", "--json")
        assert json.loads(again) == [], again
        await _until_replies_ignored(rig, ids, len(beta_dead))

        stopped.set()
        await restarts
        report = await rig.finish(ids, histories=False)
        crashes = beta.crashes
        print(f"beta crashed {crashes} times on {len(poisoned)} poisoned sagas")
        # Three deaths per poison message at most (fewer when another poison's death
        # already counted against it, or its compensation came first).
        assert len(beta_dead) <= crashes <= 3 * 3 * len(poisoned), f"beta died {crashes} times"
        report.check()
    finally:
        stopped.set()
        if restarts is not None:
            await asyncio.gather(restarts, return_exceptions=True)


async def _until_queue_empty(rig: FaultRig, queue: str, *, within: float) -> None:
    """Wait until ``queue`` holds no message, ready or unacked (fails after ``within``)."""
    vhost = unquote(urlsplit(rig.amqp_url).path.lstrip("/")) or "/"
    deadline = asyncio.get_running_loop().time() + within
    while True:
        listing = await rig.rabbit.rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "messages")
        depth = {parts[0]: parts[1] for parts in map(str.split, listing.splitlines()) if parts}
        if depth.get(queue) == "0":
            return
        assert asyncio.get_running_loop().time() < deadline, f"{queue} still holds {depth}"
        await asyncio.sleep(1)


async def _until_replies_ignored(rig: FaultRig, ids: list[str], count: int) -> None:
    """Wait until the replayed commands' answers reached the orchestrator (ignored)."""
    from campaign import rows
    from sqlalchemy import func, select

    from orchestrator.stores.tables import history

    statement = select(func.count()).where(history.c.type == "reply_ignored")
    for _ in range(600):
        [row] = await rows(rig.database_url, statement)
        if row[0] >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {row[0]} of {count} replayed commands were answered")
