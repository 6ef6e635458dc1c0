"""Mutation checks (RELIABILITY.md R20): switch off one safeguard at a time, run the test that
guards it, and require that test to FAIL. A safeguard whose test still passes without it is
not guarded at all, whatever the test's name says.

Each mutation edits one line of a copy of the working tree (the tree itself is never
touched) and runs the matching tests there, with the copy first on PYTHONPATH so that the
services the tests start run the mutated code too. Prints the matrix; exits 1 if any
mutation survived.

    .venv/bin/python scripts/mutation_check.py [NAME...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = ROOT / ".venv" / "bin" / "pytest"


@dataclass(frozen=True)
class Mutation:
    """One safeguard switched off: ``old`` replaced by ``new`` in ``path`` (and, when set,
    ``old2`` by ``new2``, for a change that moves a line)."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    """Pytest node ids that must fail with the mutation (any one failing is enough)."""
    old2: str = ""
    new2: str = ""


R3 = (
    "tests/faults/test_faults_processes.py::"
    "test_r3_a_crash_at_each_named_point_loses_and_repeats_nothing"
)
GUARANTEES = "tests/integration/transport/test_transport_guarantees.py"

MUTATIONS = (
    Mutation(
        "inbox (dedupe by idempotency key)",
        "participants/runtime.py",
        "                if existing is not None:\n                    await conn.commit()",
        "                if False:\n                    await conn.commit()",
        (f"{R3}[participant.after_commit_before_reply-postgresql]",),
    ),
    Mutation(
        "publisher confirms",
        "orchestrator/transports/amqp.py",
        "publisher_confirms=True",
        "publisher_confirms=False",
        (f"{GUARANTEES}::test_a_message_the_broker_refuses_raises_publish_failed",),
    ),
    Mutation(
        "mandatory publish (returns raised)",
        "orchestrator/transports/amqp.py",
        "mandatory=mandatory,",
        "mandatory=False,",
        (f"{GUARANTEES}::test_a_message_no_queue_takes_raises_unroutable",),
    ),
    Mutation(
        "ack only after the commit",
        "orchestrator/service.py",
        "            await delivery.ack()\n        finally:",
        "            pass\n        finally:",
        (f"{R3}[orchestrator.before_reply_commit-postgresql]",),
        "        try:\n            try:\n                await apply()",
        "        try:\n            await delivery.ack()"
        "\n            try:\n                await apply()",
    ),
    Mutation(
        "at-least-once dead-lettering",
        "orchestrator/topology.py",
        '"x-dead-letter-strategy": "at-least-once"',
        '"x-dead-letter-strategy": "at-most-once"',
        (
            "tests/integration/transport/test_transport_topology.py::"
            "test_every_work_queue_is_quorum_limited_and_dead_letters_at_least_once",
        ),
    ),
)


def _copy_tree(target: Path) -> None:
    """The working tree's files (tracked and new, not ignored) copied to ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],  # noqa: S607 - git from PATH
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _mutate(tree: Path, mutation: Mutation) -> None:
    path = tree / mutation.path
    text = path.read_text(encoding="utf-8")
    for old, new in ((mutation.old, mutation.new), (mutation.old2, mutation.new2)):
        if not old:
            continue
        found = text.count(old)
        if found != 1:
            raise SystemExit(
                f"mutation {mutation.name!r}: expected the text once in {mutation.path},"
                f" found it {found} times; update scripts/mutation_check.py"
            )
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")


def run(mutation: Mutation) -> tuple[bool, float, str]:
    """(caught, seconds, the tail of the test output) for one mutation."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as folder:
        tree = Path(folder)
        _copy_tree(tree)
        _mutate(tree, mutation)
        env = dict(os.environ, PYTHONPATH=str(tree), SAGA_FAULTS_SCALE="")
        started = time.monotonic()
        done = subprocess.run(  # noqa: S603 - our own pytest on our own test ids
            [str(PYTEST), "-q", "-x", "-p", "no:cacheprovider", "-m", "", *mutation.tests],
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        # Exit 1: tests failed (caught). 0: passed (survived). Anything else: broken run.
        if done.returncode not in (0, 1):
            raise SystemExit(
                f"mutation {mutation.name!r}: pytest exited {done.returncode}:\n{tail}"
            )
        return done.returncode == 1, elapsed, tail


def main(argv: list[str]) -> int:
    """Run the mutations named in ``argv`` (all when none); print the matrix."""
    chosen = [m for m in MUTATIONS if not argv or any(a in m.name for a in argv)]
    survived = 0
    print(f"{'safeguard switched off':40} {'result':8} {'time':>6}  caught by")
    for mutation in chosen:
        caught, elapsed, tail = run(mutation)
        survived += not caught
        tests = ", ".join(t.split("::", 1)[1] for t in mutation.tests)
        verdict = "red" if caught else "SURVIVED"
        print(f"{mutation.name:40} {verdict:8} {elapsed:5.0f}s  {tests}", flush=True)
        if not caught:
            print(f"    {tail}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
