"""A cache keyed on object identity, for values derived from frozen (but unhashable) models."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["IdentityCache"]

K = TypeVar("K")
V = TypeVar("V")


class IdentityCache(Generic[K, V]):
    """Computes ``build(key)`` once per live key object and forgets it when the key dies.

    Definitions are frozen pydantic models holding dicts, so they cannot be hashed; their
    identity is stable, though, and a frozen model never changes under the cache.
    """

    def __init__(self, build: Callable[[K], V]) -> None:
        self._build = build
        self._entries: dict[int, tuple[weakref.ref[K], V]] = {}
        # Re-entrant: a weakref callback can fire from a garbage collection run inside the lock.
        self._lock = threading.RLock()

    def get(self, key: K) -> V:
        """The cached value for ``key``, built on first use."""
        ident = id(key)
        entry = self._entries.get(ident)
        if entry is not None and entry[0]() is key:
            return entry[1]
        value = self._build(key)

        def forget(ref: weakref.ref[K]) -> None:
            with self._lock:
                current = self._entries.get(ident)
                if current is not None and current[0] is ref:
                    del self._entries[ident]

        with self._lock:
            self._entries[ident] = (weakref.ref(key, forget), value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
