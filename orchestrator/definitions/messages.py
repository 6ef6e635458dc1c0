"""Sentences for definition problems: where in the document, and what is wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from difflib import get_close_matches
from typing import Any

from pydantic_core import ErrorDetails

__all__ = ["describe_pydantic_error", "display_path", "show_value", "unknown_key"]

PathKey = tuple[str | int, ...]

_NAME_RULES = {
    ("name",): "use letters, digits, '_', '-' and '.', starting with a letter or '_'",
    ("steps", "name"): "use letters, digits, '_' and '-', starting with a letter or '_'",
    ("steps", "participant"): "use letters, digits, '_', '-' and '.'",
}
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a text string",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "tuple_type": "a list",
    "list_type": "a list",
}


def display_path(path: PathKey, step_names: Mapping[int, str]) -> str:
    """``step 'charge_card' retry.max_attempts`` for a step path, ``input.type`` otherwise."""
    head = ""
    rest: Sequence[str | int] = path
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        name = step_names.get(path[1])
        head = f"step {name!r}" if name else f"steps[{path[1]}]"
        rest = path[2:]
    dotted = ""
    for segment in rest:
        if isinstance(segment, int):
            dotted += f"[{segment}]"
        else:
            dotted += f".{segment}" if dotted else segment
    if head and dotted:
        return f"{head} {dotted}"
    return head or dotted


def show_value(value: Any) -> str:
    """A short YAML/JSON-looking rendering of a value for a message."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def unknown_key(key: str, allowed: Sequence[str], where: str) -> str:
    """The sentence for a key that is not part of the format at ``where``."""
    message = f"unknown key {key!r}" + (f" in {where}" if where else "")
    close = get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f"{message}; did you mean {close[0]!r}?"
    return f"{message}; expected one of: {', '.join(allowed)}"


def describe_pydantic_error(error: ErrorDetails, path: PathKey) -> tuple[PathKey, str]:
    """Where a pydantic error belongs in the document, and a sentence for it."""
    kind = error["type"]
    value = error.get("input")
    context = error.get("ctx") or {}
    field = path[-1] if path else ""
    if kind == "missing":
        return path[:-1], f"missing required key {field!r}"
    if kind in _EXPECTED:
        return path, f"expected {_EXPECTED[kind]}, got {show_value(value)}"
    if kind == "string_pattern_mismatch":
        shape = tuple(p for p in path if isinstance(p, str))
        rule = _NAME_RULES.get(shape, f"it must match {context.get('pattern')}")
        return path, f"{show_value(value)} is not a valid {field}: {rule}"
    if kind == "string_too_short":
        return path, "must not be empty"
    if kind in ("greater_than_equal", "greater_than"):
        bound = context.get("ge", context.get("gt"))
        return path, f"must be at least {bound}, got {show_value(value)}"
    if kind in ("less_than_equal", "less_than"):
        bound = context.get("le", context.get("lt"))
        return path, f"must be at most {bound}, got {show_value(value)}"
    if kind == "value_error":
        return path, str(error["msg"]).removeprefix("Value error, ")
    message = str(error["msg"])
    return path, message[:1].lower() + message[1:]
