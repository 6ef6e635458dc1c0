"""Crash points: armed by SAGA_CRASH_AT, they end the process at the n-th arrival only."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from orchestrator import crashpoints
from orchestrator.settings import SettingsError


@pytest.fixture(autouse=True)
def disarmed() -> Iterator[None]:
    yield
    crashpoints.arm(None)


def _run(
    spec: str, arrivals: int, point: str = "participant.before_commit"
) -> subprocess.CompletedProcess[str]:
    code = (
        "from orchestrator import crashpoints\n"
        f"crashpoints.arm({spec!r})\n"
        f"for n in range(1, {arrivals} + 1):\n"
        "    print(n, flush=True)\n"
        f"    crashpoints.crash({point!r})\n"
        "print('survived', flush=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


def test_an_armed_point_exits_at_its_nth_arrival() -> None:
    done = _run("participant.before_commit@3", arrivals=5)
    assert done.returncode == crashpoints.EXIT_CODE
    assert done.stdout.split() == ["1", "2", "3"]
    assert "crash point participant.before_commit reached" in done.stderr


def test_other_points_and_unarmed_processes_go_on() -> None:
    assert _run("orchestrator.after_commit_before_ack", arrivals=3).stdout.split()[-1] == "survived"
    assert _run("", arrivals=3).stdout.split()[-1] == "survived"


def test_without_a_count_the_first_arrival_exits() -> None:
    done = _run("participant.before_commit,orchestrator.mid_compensation@2", arrivals=4)
    assert (done.returncode, done.stdout.split()) == (crashpoints.EXIT_CODE, ["1"])


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nowhere", "unknown crash point 'nowhere'"),
        ("participant.before_commit@0", "needs a count of 1 or more"),
        ("participant.before_commit@x", "needs a count of 1 or more"),
    ],
)
def test_a_bad_spec_is_refused_with_a_sentence(spec: str, words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        crashpoints.arm(spec)


def test_unarmed_crash_does_nothing() -> None:
    crashpoints.arm(None)
    crashpoints.crash("participant.before_commit")  # would exit the test run if armed
