"""Structured logs: which saga, step and trace a line is about, plain or JSON, secrets masked.

A saga's identity travels in a :class:`~contextvars.ContextVar` (:func:`saga_log_context`)
rather than in every logging call, so code deep inside a handler logs plain messages and
still says which saga it is about; asyncio copies the variable into tasks created inside.

Masking happens in a filter on the handler :func:`configure_logging` installs, on the text
as it will be written: the message after ``%`` formatting and the formatted exception. The
filter rewrites the record (message rendered, arguments dropped, exception text set), so any
formatter that runs after it, plain or JSON, sees only masked text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from orchestrator.settings import SettingsError

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LogSettings",
    "configure_logging",
    "mask_secrets_in_text",
    "saga_log_context",
]

LOG_FORMATS = ("plain", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

MASK = "***"
_MIN_SECRET_LENGTH = 4
"""Shorter values (``"1"``, ``"EUR"``) occur everywhere; scrubbing them would garble lines."""

_CONTEXT_FIELDS = ("saga_id", "step", "trace_id")
_PLAIN_KEYS = (("saga_id", "saga"), ("step", "step"), ("trace_id", "trace"))
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CHATTY_LOGGERS = ("aiormq", "aio_pika")

# The authority of a URL: up to the path, query or fragment. Quotes and whitespace end it too,
# so that URLs quoted next to each other (a repr, a JSON document) are taken one at a time.
# The user information is everything before the last "@", as urllib splits it, so that a
# password holding a raw "@" is masked whole.
_URL_AUTHORITY = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#\s\"'<>`]+)"
)


@dataclass(frozen=True)
class LogSettings:
    """How verbose the logs are and how lines are written (``plain`` or ``json``)."""

    level: str = "INFO"
    format: str = "plain"

    def __post_init__(self) -> None:
        level = self.level.upper()
        if level not in LOG_LEVELS:
            raise SettingsError(
                f"the log level {self.level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        log_format = self.format.lower()
        if log_format not in LOG_FORMATS:
            raise SettingsError(
                f"the log format {self.format!r} is not one of {', '.join(LOG_FORMATS)}"
            )
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "format", log_format)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LogSettings:
        """Build from ``SAGA_LOG_LEVEL`` and ``SAGA_LOG_FORMAT``; unset or empty means default.

        Checked here as well as in the constructor so that the sentence names the variable
        the user has to fix.
        """
        level = _choice(environ, "SAGA_LOG_LEVEL", cls.level, LOG_LEVELS, str.upper)
        log_format = _choice(environ, "SAGA_LOG_FORMAT", cls.format, LOG_FORMATS, str.lower)
        return cls(level=level, format=log_format)


def _choice(
    environ: Mapping[str, str],
    name: str,
    default: str,
    allowed: tuple[str, ...],
    normalise: Callable[[str], str],
) -> str:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = normalise(raw.strip())
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, not {raw!r}")
    return value


@dataclass(frozen=True)
class _SagaContext:
    saga_id: str
    step: str | None
    trace_id: str | None
    secrets: tuple[str, ...]


_current: ContextVar[_SagaContext | None] = ContextVar("orchestrator_saga_log", default=None)


@contextmanager
def saga_log_context(
    saga_id: str,
    *,
    step: str | None = None,
    trace_id: str | None = None,
    secrets: Iterable[str] = (),
) -> Iterator[None]:
    """Mark every line logged inside as being about ``saga_id`` (and ``step``, ``trace_id``),
    with each of ``secrets`` (values of secret fields) written as ``***``.

    An inner context replaces the outer one's saga, step and trace, but keeps masking the
    outer one's secrets too: forgetting a secret because a step opened its own context would
    leak it, while masking one more value costs nothing.
    """
    outer = _current.get()
    kept = outer.secrets if outer is not None else ()
    fresh = tuple(s for s in secrets if len(s) >= _MIN_SECRET_LENGTH)
    # Longest first, so that a secret containing another is masked whole.
    merged = tuple(sorted(set(kept + fresh), key=len, reverse=True))
    token = _current.set(_SagaContext(saga_id, step, trace_id, merged))
    try:
        yield
    finally:
        _current.reset(token)


def mask_secrets_in_text(text: str) -> str:
    """``text`` with the password of every URL in it (``scheme://user:password@host``)
    replaced by ``***``; URLs without a password are left as they are."""
    if "://" not in text:
        return text
    return _URL_AUTHORITY.sub(_mask_authority, text)


def _mask_authority(match: re.Match[str]) -> str:
    authority = match["authority"]
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return match[0]
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return match[0]
    return f"{match['scheme']}://{user}:{MASK}@{host}"


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    text = mask_secrets_in_text(text)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _render_message(record: logging.LogRecord) -> str:
    """The message as logging would render it, or, when the arguments do not fit the
    format, the format and the arguments side by side instead of an exception."""
    try:
        return record.getMessage()
    except Exception:  # a bad format string or arguments: keep the line, show both
        try:
            return f"{record.msg!s} [unformattable arguments: {record.args!r}]"
        except Exception:
            return f"[unprintable log message of type {type(record.msg).__name__}]"


def _format_exception(record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    return record.exc_text or None


class _SagaFilter(logging.Filter):
    """Adds the saga context to a record and masks its text; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if context is not None:
            for field in _CONTEXT_FIELDS:
                # An explicit ``extra=`` has already set the attribute: it wins.
                if field not in record.__dict__:
                    setattr(record, field, getattr(context, field))
        secrets = context.secrets if context is not None else ()
        record.msg = _mask(_render_message(record), secrets)
        record.args = None
        exc_text = _format_exception(record)
        if exc_text is not None:
            record.exc_text = _mask(exc_text, secrets)
        if record.stack_info:
            record.stack_info = _mask(record.stack_info, secrets)
        return True


def _context_values(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    for field in _CONTEXT_FIELDS:
        value = getattr(record, field, None)
        if value is not None and value != "":
            yield field, value


class _PlainFormatter(logging.Formatter):
    """The classic one-line format, with ``saga= step= trace=`` after the message when set."""

    def __init__(self) -> None:
        super().__init__(_PLAIN_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        labels = dict(_PLAIN_KEYS)
        pairs = " ".join(f"{labels[field]}={value}" for field, value in _context_values(record))
        return f"{line} {pairs}" if pairs else line


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; keys without a value are left out."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        line: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _render_message(record),
        }
        line.update(_context_values(record))
        exc_text = record.exc_text or _format_exception(record)
        if exc_text:
            line["exc"] = exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str)


class _SagaHandler(logging.StreamHandler[IO[str]]):
    """The handler :func:`configure_logging` installs, told apart so a second call can
    replace it instead of adding another."""


def configure_logging(settings: LogSettings = LogSettings(), stream: IO[str] | None = None) -> None:
    """Send log records to stderr (or ``stream``) as ``settings`` says, with the saga context
    added and secrets masked; calling it again replaces what it set up before."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _SagaHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _SagaHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(_SagaFilter())
    handler.setFormatter(_JsonFormatter() if settings.format == "json" else _PlainFormatter())
    root.addHandler(handler)
    root.setLevel(settings.level)
    # aio-pika and aiormq are chatty about reconnect internals at INFO.
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
