"""Named crash points for the fault tests: the process dies at a chosen line, on purpose.

``SAGA_CRASH_AT=point[@n][,point@n...]`` makes the process exit at once (``os._exit``: no
cleanup, no flush, like SIGKILL but at an exact place) the n-th time it reaches ``point``
(the first time when ``@n`` is left out). The fault tests use it to prove that a crash
between any two durable steps loses and repeats nothing (RELIABILITY.md, R3).

A participant reaches its points only in commands that are not redelivered suspects (see
``participants.runtime``): a death while a suspect runs alone counts towards declaring it
poison, and an injected death is no command's fault.

The points are process-wide by nature, so the armed set is module state, set once at the
entry point with :func:`arm`. Unarmed, :func:`crash` is a single falsy check.
"""

from __future__ import annotations

import asyncio
import os

from orchestrator.settings import SettingsError

EXIT_CODE = 86
"""The status a process exits with at a crash point (tests tell it from other exits)."""

POINTS = {
    "orchestrator.after_commit_before_publish": "a decision committed, its commands not sent",
    "orchestrator.mid_compensation": "a compensation committed, not sent",
    "orchestrator.during_publish": "a command handed to the broker, its confirm not awaited",
    "orchestrator.after_confirm_before_mark_sent": "the broker confirmed, the row not marked",
    "orchestrator.before_reply_commit": "a reply applied in a transaction not committed",
    "orchestrator.after_commit_before_ack": "a reply committed, not acknowledged",
    "participant.before_commit": "the handler ran, its transaction not committed",
    "participant.after_commit_before_reply": "the effect committed, no reply sent",
    "participant.after_reply_before_ack": "the reply sent, the command not acknowledged",
}

_armed: dict[str, int] = {}


def arm(spec: str | None) -> None:
    """Arm the points ``spec`` names (see the module docstring); None or "" disarms."""
    _armed.clear()
    if not spec:
        return
    for part in spec.split(","):
        name, _, count = part.strip().partition("@")
        if name not in POINTS:
            known = ", ".join(sorted(POINTS))
            raise SettingsError(f"SAGA_CRASH_AT names an unknown crash point {name!r}: {known}")
        if count and (not count.isdigit() or int(count) < 1):
            raise SettingsError(f"SAGA_CRASH_AT: {part.strip()!r} needs a count of 1 or more")
        _armed[name] = int(count) if count else 1


def crash(name: str) -> None:
    """Exit now if ``name`` is armed and this is its n-th arrival."""
    if not _armed:
        return
    left = _armed.get(name)
    if left is None:
        return
    if left > 1:
        _armed[name] = left - 1
        return
    os.write(2, f"crash point {name} reached: exiting with {EXIT_CODE}\n".encode())
    os._exit(EXIT_CODE)


def crash_soon(name: str) -> None:
    """Like :func:`crash`, but on the event loop's next turn: the await that follows has
    started (a publish is on the wire) and not finished (its confirm not processed)."""
    if not _armed or name not in _armed:
        return
    asyncio.get_running_loop().call_soon(crash, name)
