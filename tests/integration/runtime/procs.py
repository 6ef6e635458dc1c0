"""Services as real processes, for the crash tests: started, killed with SIGKILL, started again.

Each :class:`ServiceProcess` runs the real entry point (``python -m orchestrator
orchestrator run`` or ``python -m orchestrator participant run testapp:NAME``) with the
test's broker vhost, databases and definitions in its environment, and appends the output
of every run to one log file in the test's tmp folder. :meth:`Services.logs_on_failure`
prints those logs when the test fails, so a crash test's failure shows what each process
was doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "RUNTIME_DIR",
    "ProcessDied",
    "Run",
    "ServiceProcess",
    "Services",
    "service_environ",
]

RUNTIME_DIR = Path(__file__).resolve().parent
"""This folder: on the children's PYTHONPATH so that ``testapp`` imports."""

ORCHESTRATOR_READY = "orchestrator running:"
"""Logged by the orchestrator once it consumes (orchestrator.service)."""

_POLL_S = 0.05


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGKILL when the test process dies, so
    that a test run killed hard leaves no service behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


class ProcessDied(AssertionError):
    """A service process exited before it said it was ready."""


def service_environ(
    *,
    amqp_url: str,
    database_url: str,
    definitions_dir: Path,
    participant_database_url: str,
) -> dict[str, str]:
    """The environment of a service process: this one's, minus any ``SAGA_*`` or ``OTEL_*``
    setting of the caller (a developer's shell must not redirect a test), plus the test's."""
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith(("SAGA_", "OTEL_"))
    }
    python_path = [str(RUNTIME_DIR)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    environ.update(
        SAGA_AMQP_URL=amqp_url,
        SAGA_DATABASE_URL=database_url,
        SAGA_DEFINITIONS=str(definitions_dir),
        SAGA_PARTICIPANT_DATABASE_URL=participant_database_url,
        PYTHONPATH=os.pathsep.join(python_path),
        PYTHONUNBUFFERED="1",
    )
    return environ


@dataclass
class Run:
    """One run of a service process: from its start to its exit."""

    process: subprocess.Popen[bytes]
    started_at: float
    """``time.monotonic()`` at the start."""
    log_offset: int
    """Where this run's output begins in the log file."""
    ready_at: float | None = None
    killed: bool = False
    """Ended by :meth:`ServiceProcess.kill` (SIGKILL from the test)."""

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        """The exit status once the process exited (negative: killed by that signal)."""
        return self.process.poll()

    async def wait_exit(self, *, within: float) -> int:
        """The exit status, polled until ``within`` seconds have passed."""
        deadline = time.monotonic() + within
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"process {self.pid} did not exit within {within:g}s")
            await asyncio.sleep(_POLL_S)
        return code


class ServiceProcess:
    """One service, run as a child process; it can be started again after it exited."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        ready_marker: str,
    ) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "orchestrator", *args]
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self.ready_marker = ready_marker
        self.runs: list[Run] = []

    # -- state --------------------------------------------------------------------

    @property
    def current(self) -> Run | None:
        """The latest run, if any (it may have exited)."""
        return self.runs[-1] if self.runs else None

    @property
    def running(self) -> bool:
        """True while the latest run's process has not exited."""
        return self.current is not None and self.current.exit_code is None

    @property
    def kills(self) -> int:
        """How many runs the test ended with SIGKILL."""
        return sum(1 for run in self.runs if run.killed)

    @property
    def crashes(self) -> int:
        """How many runs ended on their own with a non-zero status (not killed by the test)."""
        return sum(1 for run in self.runs if not run.killed and run.exit_code not in (None, 0))

    # -- control ------------------------------------------------------------------

    def start(self) -> Run:
        """Start a new run (the previous one must have exited)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.cwd.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            offset = log.tell()
            stamp = time.strftime("%H:%M:%S")
            log.write(f"----- {self.name} run {len(self.runs) + 1} at {stamp} -----\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        run = Run(process=process, started_at=time.monotonic(), log_offset=offset)
        self.runs.append(run)
        return run

    async def wait_ready(self, *, within: float = 30.0) -> float:
        """Poll the latest run's log until it says it is ready; the seconds that took.

        :class:`ProcessDied` (with the run's log) if it exits first."""
        run = self.runs[-1]
        deadline = time.monotonic() + within
        while True:
            if self.ready_marker in self.run_log(run):
                run.ready_at = time.monotonic()
                return run.ready_at - run.started_at
            code = run.exit_code
            if code is not None:
                raise ProcessDied(
                    f"{self.name} exited with status {code} before it was ready:\n"
                    + self.run_log(run)[-4000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} not ready within {within:g}s:\n" + self.run_log(run)[-4000:]
                )
            await asyncio.sleep(_POLL_S)

    async def start_ready(self, *, within: float = 30.0) -> float:
        """Start a run and wait until it is ready; the seconds that took."""
        self.start()
        return await self.wait_ready(within=within)

    async def kill(self) -> int:
        """SIGKILL the latest run (no chance to finish anything) and reap it."""
        run = self.current
        if run is None or run.exit_code is not None:
            raise RuntimeError(f"{self.name} is not running")
        run.killed = True
        os.kill(run.pid, signal.SIGKILL)
        return await run.wait_exit(within=10.0)

    async def stop(self, *, within: float = 30.0) -> int:
        """SIGTERM (a graceful stop) and the exit status; SIGKILL, then AssertionError,
        if it has not exited within ``within`` seconds."""
        run = self.current
        if run is None:
            raise RuntimeError(f"{self.name} was never started")
        if run.exit_code is not None:
            return run.exit_code
        run.process.send_signal(signal.SIGTERM)
        try:
            return await run.wait_exit(within=within)
        except AssertionError:
            run.killed = True
            run.process.kill()
            await run.wait_exit(within=10.0)
            raise AssertionError(f"{self.name} ignored SIGTERM for {within:g}s") from None

    async def keep_running(
        self, stopped: asyncio.Event, delay: Callable[[], float], *, within: float = 30.0
    ) -> None:
        """Start the service again whenever it exits, ``delay()`` seconds later, until
        ``stopped`` is set. A run that dies before it is ready is one more exit."""
        while not stopped.is_set():
            if self.running:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), _POLL_S)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), delay())
            if stopped.is_set():
                return
            self.start()
            with contextlib.suppress(ProcessDied):
                await self.wait_ready(within=within)

    # -- logs ---------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything every run wrote."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def run_log(self, run: Run) -> str:
        """What one run wrote (up to now)."""
        with self.log_path.open("rb") as log:
            log.seek(run.log_offset)
            return log.read().decode(errors="replace")


@dataclass
class Services:
    """The service processes of one test; :meth:`close` ends whichever still run."""

    workdir: Path
    env: dict[str, str]
    processes: list[ServiceProcess] = field(default_factory=list)

    def orchestrator(self, name: str = "orchestrator") -> ServiceProcess:
        """``saga orchestrator run`` (not started yet)."""
        return self._add(name, ["orchestrator", "run"], ORCHESTRATOR_READY)

    def participant(self, attribute: str, *, module: str = "testapp") -> ServiceProcess:
        """``saga participant run MODULE:ATTRIBUTE`` (not started yet); the attribute is the
        participant's name, as in ``testapp``."""
        return self._add(
            f"participant-{attribute}",
            ["participant", "run", f"{module}:{attribute}"],
            f"participant {attribute} running:",
        )

    def _add(self, name: str, args: list[str], ready: str) -> ServiceProcess:
        process = ServiceProcess(
            name,
            args,
            env=self.env,
            cwd=self.workdir,
            log_path=self.workdir / f"{name}.log",
            ready_marker=ready,
        )
        self.processes.append(process)
        return process

    async def close(self) -> None:
        """Stop every process still running (SIGTERM, then SIGKILL after 15 s)."""
        for process in self.processes:
            if process.running:
                with contextlib.suppress(AssertionError):
                    await process.stop(within=15.0)

    def logs(self, *, tail_lines: int = 150) -> str:
        """The last lines of every process's log, under a header each."""
        parts = []
        for process in self.processes:
            lines = process.log_text().splitlines()
            parts.append(
                f"===== {process.log_path} ({len(process.runs)} runs, last {tail_lines} lines)"
                " =====\n" + "\n".join(lines[-tail_lines:])
            )
        return "\n".join(parts)

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Print the processes' logs if the block raises (pytest shows them with the failure)."""
        try:
            yield
        except BaseException:
            print(self.logs())
            raise
