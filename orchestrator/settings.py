"""The orchestrator's settings: one frozen object built at the entry point and passed down.

Only :meth:`Settings.from_env` reads the environment; no other module does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from orchestrator.definitions.durations import DurationError, parse_duration
from orchestrator.errors import SagaError
from orchestrator.senders import REPLY_USERS_VARIABLE, ReplySenders
from orchestrator.stores.engine import DEFAULT_POOL_SIZE
from orchestrator.tls import amqp_url_from_env

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./saga.db"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_DEFINITIONS = "./sagas"


class SettingsError(SagaError):
    """An environment variable holds a value the orchestrator cannot use."""


@dataclass(frozen=True)
class Settings:
    """Where the orchestrator keeps state, which broker it talks to, where its definitions are."""

    database_url: str = DEFAULT_DATABASE_URL
    amqp_url: str = DEFAULT_AMQP_URL
    definitions_dir: Path = Path(DEFAULT_DEFINITIONS)
    prefetch: int = 100
    """Deliveries in hand per consumer (bounded: the broker holds the rest)."""
    db_pool_size: int = DEFAULT_POOL_SIZE
    """``SAGA_DB_POOL_SIZE``: database connections the process keeps (and the most it opens)."""
    max_message_bytes: int = 256 * 1024
    """Bodies larger than this are dead-lettered before parsing."""
    crash_at: str | None = None
    """Fault tests only: ``SAGA_CRASH_AT`` (see :mod:`orchestrator.crashpoints`)."""
    reply_senders: ReplySenders | None = None
    """``SAGA_REPLY_USERS``: the broker user each participant must answer as; None: anyone."""
    dedupe_retention: timedelta = timedelta(hours=24)
    """``SAGA_DEDUPE_RETENTION``: how long handled message ids and sent outbox rows are kept."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``SAGA_*`` variables (PRODUCT.md, Configuration).

        ``amqp_url`` carries the TLS files (``SAGA_AMQP_CA_FILE``, ``SAGA_AMQP_CERT_FILE``,
        ``SAGA_AMQP_KEY_FILE``), checked here, so every connection made from it uses them
        (see :mod:`orchestrator.tls`)."""
        return cls(
            database_url=environ.get("SAGA_DATABASE_URL", DEFAULT_DATABASE_URL),
            amqp_url=amqp_url_from_env(environ, DEFAULT_AMQP_URL),
            definitions_dir=Path(environ.get("SAGA_DEFINITIONS", DEFAULT_DEFINITIONS)),
            prefetch=positive_int(environ, "SAGA_PREFETCH", cls.prefetch),
            db_pool_size=positive_int(environ, "SAGA_DB_POOL_SIZE", cls.db_pool_size),
            max_message_bytes=positive_int(
                environ, "SAGA_MAX_MESSAGE_BYTES", cls.max_message_bytes
            ),
            crash_at=environ.get("SAGA_CRASH_AT") or None,
            reply_senders=ReplySenders.parse(environ.get(REPLY_USERS_VARIABLE, "")),
            dedupe_retention=duration(environ, "SAGA_DEDUPE_RETENTION", cls.dedupe_retention),
        )


def positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """The whole positive number in variable ``name`` (``default`` when unset or empty);
    :class:`SettingsError` naming the variable otherwise."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, not {value}")
    return value


def duration(environ: Mapping[str, str], name: str, default: timedelta) -> timedelta:
    """The positive duration in variable ``name`` (``90s``, ``30m``, ``24h``; ``default``
    when unset or empty); :class:`SettingsError` naming the variable otherwise."""
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse_duration(raw)
    except DurationError as exc:
        raise SettingsError(f"{name}: {exc}") from None
    if value <= timedelta(0):
        raise SettingsError(f"{name} must be longer than zero, not {raw!r}")
    return value
