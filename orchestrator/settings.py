"""The orchestrator's settings: one frozen object built at the entry point and passed down.

Only :meth:`Settings.from_env` reads the environment; no other module does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./saga.db"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_DEFINITIONS = "./sagas"


@dataclass(frozen=True)
class Settings:
    """Where the orchestrator keeps state, which broker it talks to, where its definitions are."""

    database_url: str = DEFAULT_DATABASE_URL
    amqp_url: str = DEFAULT_AMQP_URL
    definitions_dir: Path = Path(DEFAULT_DEFINITIONS)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``SAGA_*`` variables (PRODUCT.md, Configuration)."""
        return cls(
            database_url=environ.get("SAGA_DATABASE_URL", DEFAULT_DATABASE_URL),
            amqp_url=environ.get("SAGA_AMQP_URL", DEFAULT_AMQP_URL),
            definitions_dir=Path(environ.get("SAGA_DEFINITIONS", DEFAULT_DEFINITIONS)),
        )
