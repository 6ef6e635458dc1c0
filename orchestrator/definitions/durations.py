"""Durations as written in saga definitions and on the command line: ``250ms``, ``5s``, ``1h``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class DurationError(ValueError):
    """A duration that is not a number followed by ms, s, m or h."""


def parse_duration(text: str, *, plain_seconds: bool = False) -> timedelta:
    """Parse ``250ms``/``5s``/``2m``/``1h``; with ``plain_seconds`` also bare seconds (``30``)."""
    match = _DURATION.match(text)
    if match is not None:
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if plain_seconds:
        try:
            seconds = float(text)
        except ValueError:
            pass
        else:
            if seconds >= 0:
                return timedelta(seconds=seconds)
    raise DurationError(
        f"bad duration {text!r}: expected a number with a unit, like 250ms, 5s, 2m or 1h"
    )


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the definition syntax."""
    ms = round(value.total_seconds() * 1000)
    for unit, factor in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


def _coerce(value: object) -> object:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    shown = "true" if value is True else "false" if value is False else repr(value)
    raise DurationError(
        f"bad duration {shown}: expected a number with a unit, like 250ms, 5s, 2m or 1h"
    )


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
]
"""A pydantic field type for durations; serialises back to the definition syntax."""
