"""The event loop the long-lived services run on.

uvloop when it is installed (it is a dependency on Linux and macOS): its sockets and
scheduling cost less CPU per message than asyncio's own loop, and a service here spends
most of its time moving small messages. ``SAGA_EVENT_LOOP=asyncio`` chooses asyncio's
loop anyway (to rule the loop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from orchestrator.settings import SettingsError

_T = TypeVar("_T")

CHOICES = ("uvloop", "asyncio")


def loop_factory(environ: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop to make, or None for asyncio's default; :class:`SettingsError` for a name
    ``SAGA_EVENT_LOOP`` should not have, or uvloop asked for by name but not installed."""
    wanted = environ.get("SAGA_EVENT_LOOP", "").strip().lower()
    if wanted not in ("", *CHOICES):
        raise SettingsError(
            f"SAGA_EVENT_LOOP is {wanted!r}; it must be one of {', '.join(CHOICES)}"
        )
    if wanted == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if wanted == "uvloop":
            raise SettingsError("SAGA_EVENT_LOOP is uvloop, but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, _T], environ: Mapping[str, str]) -> _T:
    """Run ``main`` to completion on the loop :func:`loop_factory` chooses."""
    try:
        factory = loop_factory(environ)
    except SettingsError:
        main.close()  # never awaited: say so quietly rather than with a RuntimeWarning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
