"""``make demo``: migrate an embedded SQLite store, start the orchestrator and the example
participants, run an order that completes, one that compensates and an express order (a
parallel group, a pivot and a condition), print their timelines, and stop everything it
started.

It drives the product the way a user would: through the ``saga`` command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from orchestrator.settings import DEFAULT_AMQP_URL

ROOT = Path(__file__).resolve().parents[1]
WORKDIR = ROOT / ".demo"
PARTICIPANTS = ("inventory", "payments", "notifications", "blobs", "profiles")


def _saga() -> list[str]:
    return [sys.executable, "-m", "orchestrator"]


def _broker_reachable(url: str) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    try:
        with socket.create_connection((parsed.hostname or "localhost", port), timeout=3):
            return True
    except OSError:
        return False


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [*_saga(), *args], cwd=WORKDIR, env=env, text=True, capture_output=True, check=False
    )
    if check and result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(
            f"demo: `saga {' '.join(args)}` failed with exit status {result.returncode}"
        )
    return result


def _start_saga(env: dict[str, str], title: str, name: str, payload: str) -> str:
    _banner(title)
    print(f"$ saga start {name} --input '{payload}' --wait", flush=True)
    result = _run(env, "start", name, "--input", payload, "--wait", "--timeout", "60s", check=False)
    print(result.stdout, end="", flush=True)
    if result.returncode not in (0, 1):
        sys.stderr.write(result.stderr)
        raise SystemExit(f"demo: the saga did not finish (exit status {result.returncode})")
    first = result.stdout.split()
    return first[0] if first else ""


def main() -> int:
    """Run the demo; 0 when the two orders completed and the declined one compensated."""
    amqp_url = os.environ.get("SAGA_AMQP_URL", DEFAULT_AMQP_URL)
    if not _broker_reachable(amqp_url):
        print(
            f"demo: RabbitMQ is not reachable at {urlparse(amqp_url).hostname}; start it "
            "(`docker compose up -d rabbitmq`, or `rabbitmq-server -detached`) and try again.",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(WORKDIR, ignore_errors=True)
    (WORKDIR / "logs").mkdir(parents=True)
    env = {
        **os.environ,
        "SAGA_AMQP_URL": amqp_url,
        "SAGA_DATABASE_URL": f"sqlite+aiosqlite:///{WORKDIR / 'saga.db'}",
        "SAGA_DEFINITIONS": str(ROOT / "sagas"),
        "SAGA_EXAMPLE_BLOB_DIR": str(WORKDIR / "blobs"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("SAGA_PARTICIPANT_DATABASE_URL", None)  # each participant: ./<name>.db in .demo/

    _banner("migrating the embedded SQLite store")
    print(_run(env, "db", "upgrade").stdout, end="")

    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        commands = [("orchestrator", ["orchestrator", "run"])] + [
            (name, ["participant", "run", f"participants.examples.{name}:app"])
            for name in PARTICIPANTS
        ]
        _banner("starting the orchestrator and the example participants")
        for name, args in commands:
            log = (WORKDIR / "logs" / f"{name}.log").open("wb")
            process = subprocess.Popen(  # noqa: S603 - our own CLI
                [*_saga(), *args], cwd=WORKDIR, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            processes.append((name, process))
            print(f"  {name:<14} pid {process.pid}  log .demo/logs/{name}.log")

        completed = _start_saga(
            env,
            "an order that goes through",
            "order_checkout",
            '{"order_id": "o-1001", "amount": 42.5, "card_token": "tok-visa"}',
        )
        compensated = _start_saga(
            env,
            "an order whose card is declined (its stock reservation is released)",
            "order_checkout",
            '{"order_id": "o-1002", "amount": 5000, "card_token": "tok-visa"}',
        )
        express = _start_saga(
            env,
            "an express order: stock and card at once, then the confirmation and the courier",
            "express_order",
            '{"order_id": "o-1003", "amount": 80, "card_token": "tok-visa", "express": true}',
        )
        timelines = (
            ("completed", completed),
            ("compensated", compensated),
            ("express (parallel group, pivot, condition)", express),
        )
        for title, saga_id in timelines:
            _banner(f"timeline of the {title} saga {saga_id}")
            print(_run(env, "history", saga_id).stdout, end="")
        states = [
            _run(env, "status", saga_id, "--json").stdout
            for saga_id in (completed, compensated, express)
        ]
        ok = (
            '"state": "completed"' in states[0]
            and '"state": "compensated"' in states[1]
            and '"state": "completed"' in states[2]
        )
    finally:
        _banner("stopping")
        for _name, process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for name, process in processes:
            try:
                code = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            print(f"  {name:<14} exited with status {code}")
    print(
        "\ndemo: "
        + (
            "two orders completed (one express), the declined one compensated."
            if ok
            else "UNEXPECTED OUTCOME"
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
