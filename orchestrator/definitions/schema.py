"""The input JSON Schema of a definition: checked at load, applied at start, secrets found.

Schemas are JSON Schema Draft 2020-12. An input property may carry ``secret: true``
(jsonschema ignores keywords it does not know); such values are redacted as ``***``
wherever the product shows them. Secret paths are dotted property names, with ``*``
standing for any list index or any key matched by ``additionalProperties``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from orchestrator.definitions.cache import IdentityCache
from orchestrator.definitions.model import SagaDefinition

__all__ = [
    "REDACTED",
    "redact",
    "schema_problems",
    "secret_paths",
    "secret_values",
    "validate_input",
]

REDACTED = "***"
"""What a secret value is shown as."""

JSON = Any
SchemaPath = tuple[str | int, ...]

_MESSAGE_LIMIT = 200
_SAME_PATH_LISTS = ("allOf", "anyOf", "oneOf")
_SAME_PATH_SCHEMAS = ("not", "if", "then", "else")
_ANY_CHILD_SCHEMAS = ("additionalProperties", "unevaluatedProperties", "items", "contains")
_ANY_CHILD_MAPS = ("patternProperties",)
_DETACHED_MAPS = ("$defs", "definitions")
_RECURSION_DEPTH = 3
_TYPES = "string, number, integer, boolean, object, array or null"


def schema_problems(schema: dict[str, JSON]) -> list[tuple[SchemaPath, str]]:
    """Everything wrong with an input schema, each with its path inside the schema."""
    problems: list[tuple[SchemaPath, str]] = []
    meta = Draft202012Validator(
        Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    for error in meta.iter_errors(schema):
        path = tuple(error.absolute_path)
        if error.validator == "anyOf" and path and path[-1] == "type":
            message = f"{_short(error.instance)} is not a JSON Schema type (use {_TYPES})"
        else:
            message = _clip(error.message)
        problems.append((path, message))
    # The 2020-12 metaschema reaches a subschema through several vocabularies: one report each.
    problems = list(dict.fromkeys(problems))
    valid = not problems
    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    for node, path, _ in _walk(schema, (), ""):
        secret = node.get("secret")
        if "secret" in node and not isinstance(secret, bool):
            problems.append(((*path, "secret"), "secret must be true or false"))
        ref = node.get("$ref")
        # A nested $id moves the base of relative references; those we leave to jsonschema.
        if valid and isinstance(ref, str) and not (path and "$id" in node):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                problems.append(
                    (
                        (*path, "$ref"),
                        f"$ref {ref!r} points to nothing in this schema "
                        "(only references inside the input schema are supported)",
                    )
                )
    return problems


def secret_paths(definition: SagaDefinition) -> frozenset[str]:
    """Dotted input paths marked ``secret: true`` (``*`` for any list index or extra key)."""
    return _SECRETS.get(definition)


def validate_input(definition: SagaDefinition, value: JSON) -> list[str]:
    """Every way ``value`` breaks the input schema, as sentences; empty when it is valid.

    Messages never show a secret value: each is replaced by ``***``.
    """
    if definition.input_schema is None:
        return []
    validator = _VALIDATORS.get(definition)
    secrets = secret_paths(definition)
    hidden = _secret_values(value, secrets)
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: _dotted(e.absolute_path))
    except Unresolvable as exc:
        return [f"input: the input schema has a reference that cannot be resolved: {exc}"]
    messages = []
    for error in errors:
        location = _dotted(error.absolute_path)
        message = error.message
        if _is_secret(location, secrets):
            message = message.replace(repr(error.instance), REDACTED)
        elif isinstance(error.instance, dict | list):
            # Never echo a whole object back: it may be large or hold a misplaced secret.
            kind = "an object" if isinstance(error.instance, dict) else "an array"
            message = message.replace(repr(error.instance), kind)
        for secret in hidden:
            message = message.replace(secret, REDACTED)
        messages.append(f"{location}: {_clip(message)}")
    return messages


def redact(value: JSON, paths: frozenset[str], prefix: str = "") -> JSON:
    """A copy of ``value`` with the value at every path in ``paths`` replaced by ``***``.

    ``prefix`` is the dotted path of ``value`` itself (``""`` for the whole input).
    """
    if prefix and _is_secret(prefix, paths):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, paths, f"{prefix}.{k}" if prefix else k) for k, v in value.items()}
    if isinstance(value, list):
        return [
            redact(v, paths, f"{prefix}.{i}" if prefix else str(i)) for i, v in enumerate(value)
        ]
    return value


def secret_values(definition: SagaDefinition, value: JSON) -> list[str]:
    """The secret strings in a saga's input (longest first), to scrub from free text such as
    a participant's error message before it reaches a log line or a span."""
    paths = secret_paths(definition)
    if not paths:
        return []
    return [text for text in _secret_values(value, paths) if text[:1] not in "'\""]


def _is_secret(dotted: str, paths: frozenset[str]) -> bool:
    """True when ``dotted`` (``input.`` prefix allowed) is a secret path or lies under one."""
    segments = dotted.split(".")
    if segments[0] == "input":
        segments = segments[1:]
    for path in paths:
        pattern = path.split(".")
        if len(pattern) <= len(segments) and all(
            p in ("*", s) for p, s in zip(pattern, segments, strict=False)
        ):
            return True
    return False


def _secret_values(value: JSON, paths: frozenset[str]) -> list[str]:
    """The reprs of secret values in an input, longest first, to scrub them from messages."""
    found: set[str] = set()

    def visit(node: JSON, prefix: str) -> None:
        if prefix and _is_secret(prefix, paths):
            # Strings are what jsonschema quotes in messages; numbers are too short to scrub
            # blindly and are hidden by the error's own location instead.
            if isinstance(node, str) and node:
                found.update({repr(node), json.dumps(node)})
                if len(node) >= 4:
                    found.add(node)
            return
        if isinstance(node, dict | list):
            children = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in children:
                visit(child, f"{prefix}.{key}" if prefix else str(key))

    if paths:
        visit(value, "")
    return sorted(found, key=len, reverse=True)


def _dotted(path: Any) -> str:
    return ".".join(["input", *(str(segment) for segment in path)])


def _short(value: JSON) -> str:
    try:
        return _clip(json.dumps(value), 60)
    except (TypeError, ValueError):
        return _clip(repr(value), 60)


def _clip(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _walk(
    schema: JSON, path: SchemaPath, input_path: str | None
) -> Iterator[tuple[dict[str, JSON], SchemaPath, str | None]]:
    """Every subschema with its path in the schema and the input path it describes.

    ``input_path`` is None for subschemas not tied to an input location (``$defs``).
    """
    if not isinstance(schema, dict):
        return

    def child(name: str) -> str | None:
        if input_path is None:
            return None
        return f"{input_path}.{name}" if input_path else name

    yield schema, path, input_path
    for keyword in _SAME_PATH_LISTS:
        for index, sub in enumerate(_as_list(schema.get(keyword))):
            yield from _walk(sub, (*path, keyword, index), input_path)
    for keyword in _SAME_PATH_SCHEMAS:
        yield from _walk(schema.get(keyword), (*path, keyword), input_path)
    for name, sub in _as_dict(schema.get("properties")).items():
        yield from _walk(sub, (*path, "properties", name), child(name))
    for index, sub in enumerate(_as_list(schema.get("prefixItems"))):
        yield from _walk(sub, (*path, "prefixItems", index), child(str(index)))
    for keyword in _ANY_CHILD_SCHEMAS:
        yield from _walk(schema.get(keyword), (*path, keyword), child("*"))
    for keyword in _ANY_CHILD_MAPS:
        for name, sub in _as_dict(schema.get(keyword)).items():
            yield from _walk(sub, (*path, keyword, name), child("*"))
    for name, sub in _as_dict(schema.get("dependentSchemas")).items():
        yield from _walk(sub, (*path, "dependentSchemas", name), input_path)
    for keyword in _DETACHED_MAPS:
        for name, sub in _as_dict(schema.get(keyword)).items():
            yield from _walk(sub, (*path, keyword, name), None)


def _as_list(value: JSON) -> list[JSON]:
    return value if isinstance(value, list) else []


def _as_dict(value: JSON) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {}


def _find_secrets(definition: SagaDefinition) -> frozenset[str]:
    schema = definition.input_schema
    if schema is None:
        return frozenset()
    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    found: set[str] = set()

    def collect(root: JSON, path: str, following: tuple[int, ...]) -> None:
        for node, _, input_path in _walk(root, (), path):
            if input_path is None:
                continue
            if node.get("secret") is True and input_path:
                found.add(input_path)
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    target = resolver.lookup(ref).contents
                except Unresolvable:
                    continue
                # A recursive schema is unrolled a few levels: finite paths cannot say more.
                if following.count(id(target)) < _RECURSION_DEPTH:
                    collect(target, input_path, (*following, id(target)))

    collect(schema, "", (id(schema),))
    return frozenset(found)


def _build_validator(definition: SagaDefinition) -> Draft202012Validator:
    return Draft202012Validator(
        definition.input_schema or {}, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


_SECRETS: IdentityCache[SagaDefinition, frozenset[str]] = IdentityCache(_find_secrets)
_VALIDATORS: IdentityCache[SagaDefinition, Draft202012Validator] = IdentityCache(_build_validator)
