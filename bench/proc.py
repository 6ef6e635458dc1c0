"""Starting and stopping the processes of a system under test."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The checkout: the children run from it, so ``bench`` and the product import."""


class StartFailed(RuntimeError):
    """A process exited, or did not say it was ready in time."""


def environ(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment, without telemetry exporters, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


async def start(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    ready: str,
    within: float = 60.0,
    stdin: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``python ARGS``, its output appended to ``log``; return once ``ready`` appears in
    the log."""
    process, offset = _spawn(args, env, log, stdin)
    deadline = time.monotonic() + within
    while True:
        with log.open("rb") as text:
            text.seek(offset)
            if ready.encode() in text.read():
                return process
        if process.poll() is not None:
            raise StartFailed(f"{' '.join(args)} exited {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            stop(process)
            raise StartFailed(f"{' '.join(args)} was not ready in {within:g}s; see {log}")
        await asyncio.sleep(0.05)


def _spawn(
    args: Sequence[str], env: Mapping[str, str], log: Path, stdin: bool
) -> tuple[subprocess.Popen[bytes], int]:
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, *args],
            env=dict(env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            start_new_session=True,
        )
    return process, offset


def run(args: Sequence[str], *, env: Mapping[str, str], log: Path) -> None:
    """Run ``python ARGS`` to the end (a set-up command); fail on a non-zero exit."""
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, *args], env=dict(env), cwd=ROOT, stdout=out, stderr=out, check=False
        )
    if done.returncode != 0:
        raise StartFailed(f"{' '.join(args)} exited {done.returncode}; see {log}")


def stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM to the process's group, SIGKILL after ``grace`` seconds; wait for it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    if process.stdin is not None:
        process.stdin.close()
