"""``${...}`` references in payloads and ``output``: parsed once, checked at load, rendered.

Allowed: ``${input}``, ``${input.PATH}``, ``${steps.STEP.result}``,
``${steps.STEP.result.PATH}`` and ``${saga.id}``; PATH is dot-separated keys
(identifier-like) or list indexes (non-negative integers). ``$${`` writes a literal ``${``.
Only string *values* are templates, never mapping keys.

A string that is exactly one reference takes the referenced value with its JSON type;
a reference inside a longer string is interpolated (strings as they are, anything else
as compact JSON). Rendering is pure: no I/O, no evaluation beyond looking values up.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from orchestrator.definitions.errors import MissingReference

__all__ = [
    "JSON",
    "Reference",
    "ReferenceContext",
    "ReferenceSyntaxError",
    "Template",
    "TemplateProblem",
    "compile_template",
    "parse_reference",
    "render",
    "resolve",
    "scope_problem",
    "scope_problems",
]

JSON = Any
"""A JSON value (dict, list, str, int, float, bool or None)."""

TemplatePath = tuple[str | int, ...]
"""Where a value sits inside a template: mapping keys and list indexes."""

_IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_SEGMENT = re.compile(rf"(?:{_IDENT}|0|[1-9][0-9]*)")
_STEP_NAME = re.compile(_IDENT)
_OPEN = re.compile(r"\$\$\{|\$\{")
_ROOTS = "${input...}, ${steps.STEP.result...} or ${saga.id}"


class ReferenceSyntaxError(ValueError):
    """The text between ``${`` and ``}`` is not a reference we know."""


@dataclass(frozen=True)
class Reference:
    """One parsed reference: its root, the step it names (if any) and the path below."""

    text: str
    """The reference as written, ``${...}`` included."""
    root: str
    """``input``, ``steps`` or ``saga``."""
    step: str | None
    path: tuple[str, ...]
    """Segments below ``input`` or ``steps.STEP.result`` (``("id",)`` for ``saga``)."""


def parse_reference(body: str) -> Reference:
    """Parse the inside of ``${...}``; raises ReferenceSyntaxError with a sentence."""
    text = "${" + body + "}"
    if not body:
        raise ReferenceSyntaxError(f"empty reference ${{}}: write {_ROOTS}")
    segments = body.split(".")
    root = segments[0]
    if root not in ("input", "steps", "saga"):
        raise ReferenceSyntaxError(f"unknown reference {text}: a reference is {_ROOTS}")
    for segment in segments[1:]:
        if not _SEGMENT.fullmatch(segment):
            shown = "an empty segment" if not segment else f"the segment {segment!r}"
            raise ReferenceSyntaxError(
                f"bad reference path {text}: {shown} is neither a key "
                "(letters, digits, '_', '-') nor a list index"
            )
    if root == "saga":
        if segments[1:] != ["id"]:
            raise ReferenceSyntaxError(f"unknown reference {text}: only ${{saga.id}} exists")
        return Reference(text, "saga", None, ("id",))
    if root == "input":
        return Reference(text, "input", None, tuple(segments[1:]))
    if len(segments) < 3 or not _STEP_NAME.fullmatch(segments[1]) or segments[2] != "result":
        raise ReferenceSyntaxError(
            f"bad reference {text}: a step reference is ${{steps.STEP.result}} "
            "or ${steps.STEP.result.PATH}"
        )
    return Reference(text, "steps", segments[1], tuple(segments[3:]))


@dataclass(frozen=True)
class TemplateProblem:
    """Something wrong in a template: where inside it, and a sentence."""

    path: TemplatePath
    message: str


@dataclass(frozen=True)
class ReferenceContext:
    """What references resolve against when a payload or the output is rendered."""

    saga_id: str
    input: JSON
    results: Mapping[str, JSON | None]
    """Results of the steps that have one, by step name."""
    own_step: str | None = None
    """In a compensation: the compensated step, whose missing result renders as null."""


@dataclass(frozen=True)
class _Literal:
    value: JSON


@dataclass(frozen=True)
class _Whole:
    ref: Reference


@dataclass(frozen=True)
class _Text:
    parts: tuple[str | Reference, ...]


@dataclass(frozen=True)
class _Broken:
    text: str


@dataclass(frozen=True)
class _Object:
    items: tuple[tuple[str, _Node], ...]


@dataclass(frozen=True)
class _Array:
    items: tuple[_Node, ...]


_Node = _Literal | _Whole | _Text | _Broken | _Object | _Array


@dataclass(frozen=True)
class Template:
    """A payload or output whose references were parsed once; render it many times."""

    _root: _Node
    problems: tuple[TemplateProblem, ...] = field(default=())
    """Syntax problems found while compiling; empty for a loaded definition."""

    def render(self, context: ReferenceContext) -> JSON:
        """The value with every reference replaced; MissingReference if one finds nothing."""
        return _render(self._root, context)

    def references(self) -> Iterator[tuple[TemplatePath, Reference]]:
        """Every reference with the path of the value it sits in."""
        yield from _references(self._root, ())


def compile_template(value: JSON) -> Template:
    """Parse every ``${...}`` in the string values of ``value`` (recursively)."""
    problems: list[TemplateProblem] = []
    root = _compile(value, (), problems)
    return Template(root, tuple(problems))


def render(template: JSON, context: ReferenceContext) -> JSON:
    """Render a raw template; callers rendering often should keep a compiled Template."""
    return compile_template(template).render(context)


def scope_problems(
    template: Template,
    *,
    where: str,
    visible: Sequence[str],
    all_steps: Sequence[str],
    own_step: str | None = None,
) -> list[TemplateProblem]:
    """Problems with the steps a template refers to.

    ``where`` names the template in messages (``step 'x'``, ``output``...); ``visible`` are
    the steps whose results it may use; ``own_step`` is the step the template belongs to.
    """
    problems: list[TemplateProblem] = []
    for path, ref in template.references():
        message = scope_problem(
            ref, where=where, visible=visible, all_steps=all_steps, own_step=own_step
        )
        if message is not None:
            problems.append(TemplateProblem(path, message))
    return problems


def scope_problem(
    ref: Reference,
    *,
    where: str,
    visible: Sequence[str],
    all_steps: Sequence[str],
    own_step: str | None = None,
) -> str | None:
    """Why ``ref`` may not be used in ``where`` (see :func:`scope_problems`), or None."""
    step = ref.step
    if step is None or step in visible:
        return None
    if step == own_step:
        return f"{where} refers to its own result, which does not exist before it runs"
    if step in all_steps:
        return f"{where} refers to step {step!r}, which does not run before it"
    message = f"{where} refers to unknown step {step!r}"
    close = get_close_matches(step, list(all_steps), n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return message


def _compile(value: JSON, path: TemplatePath, problems: list[TemplateProblem]) -> _Node:
    if isinstance(value, str):
        return _compile_string(value, path, problems)
    if isinstance(value, dict):
        items = tuple((k, _compile(v, (*path, k), problems)) for k, v in value.items())
        if all(isinstance(node, _Literal) for _, node in items):
            return _Literal(value)
        return _Object(items)
    if isinstance(value, list):
        elements = tuple(_compile(v, (*path, i), problems) for i, v in enumerate(value))
        if all(isinstance(node, _Literal) for node in elements):
            return _Literal(value)
        return _Array(elements)
    return _Literal(value)


def _compile_string(text: str, path: TemplatePath, problems: list[TemplateProblem]) -> _Node:
    if "${" not in text:
        return _Literal(text)
    parts: list[str | Reference] = []
    literal = ""
    position = 0
    while (match := _OPEN.search(text, position)) is not None:
        literal += text[position : match.start()]
        if match.group() == "$${":
            literal += "${"
            position = match.end()
            continue
        close = text.find("}", match.end())
        if close < 0:
            shown = text[match.start() : match.start() + 40]
            problems.append(
                TemplateProblem(path, f"unterminated reference {shown!r}: a '}}' is missing")
            )
            return _Broken(text[match.start() :])
        try:
            reference = parse_reference(text[match.end() : close])
        except ReferenceSyntaxError as exc:
            problems.append(TemplateProblem(path, str(exc)))
            return _Broken(text[match.start() : close + 1])
        if literal:
            parts.append(literal)
            literal = ""
        parts.append(reference)
        position = close + 1
    literal += text[position:]
    if literal:
        parts.append(literal)
    if len(parts) == 1 and isinstance(parts[0], Reference):
        return _Whole(parts[0])
    if all(isinstance(part, str) for part in parts):
        return _Literal("".join(str(part) for part in parts))
    return _Text(tuple(parts))


def _references(node: _Node, path: TemplatePath) -> Iterator[tuple[TemplatePath, Reference]]:
    if isinstance(node, _Whole):
        yield path, node.ref
    elif isinstance(node, _Text):
        for part in node.parts:
            if isinstance(part, Reference):
                yield path, part
    elif isinstance(node, _Object):
        for key, child in node.items:
            yield from _references(child, (*path, key))
    elif isinstance(node, _Array):
        for index, child in enumerate(node.items):
            yield from _references(child, (*path, index))


def _render(node: _Node, context: ReferenceContext) -> JSON:
    if isinstance(node, _Literal):
        return _copy(node.value)
    if isinstance(node, _Whole):
        return _copy(resolve(node.ref, context))
    if isinstance(node, _Text):
        return "".join(
            part if isinstance(part, str) else _as_text(resolve(part, context))
            for part in node.parts
        )
    if isinstance(node, _Object):
        return {key: _render(child, context) for key, child in node.items}
    if isinstance(node, _Array):
        return [_render(child, context) for child in node.items]
    raise MissingReference(node.text)


def resolve(ref: Reference, context: ReferenceContext) -> JSON:
    """The value a reference points at; MissingReference when there is none."""
    if ref.root == "saga":
        return context.saga_id
    if ref.root == "input":
        value = context.input
    else:
        assert ref.step is not None
        value = context.results.get(ref.step)
        if value is None:
            # A compensated step that timed out has no result: its compensation sees null.
            if ref.step == context.own_step:
                return None
            raise MissingReference(ref.text)
    for segment in ref.path:
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            raise MissingReference(ref.text)
    return value


def _as_text(value: JSON) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _copy(value: JSON) -> JSON:
    """A copy of the containers, so a rendered payload never aliases the saga's input."""
    if isinstance(value, dict):
        return {key: _copy(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_copy(child) for child in value]
    return value
