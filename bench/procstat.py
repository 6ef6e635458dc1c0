"""CPU time and memory of processes, read from /proc (Linux).

CPU time is the steadiest figure on a shared machine: it does not count the time a process
waited for a core. A role's CPU is the sum over its processes and all their descendants."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, with that of its children it has waited for; 0 when
    it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces: fields are counted after its ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICK


def descendants(pids: Iterable[int]) -> set[int]:
    """The processes and every live descendant of them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def named(name: str) -> list[int]:
    """Pids of the processes whose command name is ``name`` (e.g. ``postgres``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == name:
            pids.append(int(entry.name))
    return pids


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB; 0 when it is gone."""
    return _status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float:
    """The process's resident memory now (VmRSS) in MiB; 0 when it is gone."""
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class CpuMeter:
    """CPU seconds spent by each role between :meth:`start` and :meth:`stop`.

    Processes that appear in between count from zero; a process that exits in between takes
    its last reading with it (its parent's waited-for children count, when it is a child)."""

    def __init__(self) -> None:
        self._before: dict[str, dict[int, float]] = {}

    @staticmethod
    def read(roles: Mapping[str, Iterable[int]]) -> dict[str, dict[int, float]]:
        return {
            role: {pid: cpu_seconds(pid) for pid in descendants(pids)}
            for role, pids in roles.items()
        }

    def start(self, roles: Mapping[str, Iterable[int]]) -> None:
        self._before = self.read(roles)

    def stop(self, roles: Mapping[str, Iterable[int]]) -> dict[str, float]:
        after = self.read(roles)
        spent: dict[str, float] = {}
        for role, readings in after.items():
            before = self._before.get(role, {})
            spent[role] = sum(
                max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in readings.items()
            )
        return spent
