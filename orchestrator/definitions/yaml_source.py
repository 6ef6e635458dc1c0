"""Safe, bounded YAML reading that remembers the line of every key and list item.

Only a subclass of :class:`yaml.SafeLoader` is used, and only to *compose* the node tree:
no constructor ever runs on a tag, so ``!!python/...`` and friends cannot execute anything.
We build plain JSON-like values from the nodes ourselves, which lets us reject tags outside
the JSON set, report duplicate keys with both lines, and stop alias bombs (billion laughs)
with an alias count and a budget on the expanded size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from re import Pattern
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "MAX_ALIASES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "ParsedYaml",
    "PathKey",
    "SafeDefinitionLoader",
    "parse_yaml",
]

MAX_BYTES = 1 << 20
"""Largest definition file we read (1 MiB)."""
MAX_ALIASES = 100
"""Most ``*alias`` uses in one document."""
MAX_NODES = 100_000
"""Most values a document may expand to once aliases are followed."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists."""

PathKey = tuple[str | int, ...]
"""Where a value sits in the document: mapping keys and list indexes from the root."""

_YAML = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_YAML + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE = _YAML + "map", _YAML + "seq", _YAML + "merge"
_TIMESTAMP = _YAML + "timestamp"


class _LimitExceeded(yaml.MarkedYAMLError):
    """The document is too large, too deep or uses too many aliases."""


class SafeDefinitionLoader(yaml.SafeLoader):
    """A SafeLoader that bounds alias use and nesting while composing, and keeps dates as text.

    The implicit timestamp resolver is dropped: a date in a payload stays the string the
    user wrote, as JSON has no date type.
    """

    yaml_implicit_resolvers: dict[Any, list[tuple[Any, Pattern[str]]]] = {  # noqa: RUF012
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def _next_mark(self) -> Any:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped stub
        return event.start_mark

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        """Compose one node, refusing too many aliases and too deep nesting."""
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitExceeded(
                    problem=f"the document uses more than {MAX_ALIASES} aliases",
                    problem_mark=self._next_mark(),
                )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitExceeded(
                    problem=f"values are nested more than {MAX_DEPTH} levels deep",
                    problem_mark=self._next_mark(),
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass(frozen=True)
class ParsedYaml:
    """A document as plain values, the line of each path, and what was wrong with it.

    ``complete`` is False when reading stopped early (syntax error, a limit): ``data`` is
    then meaningless and only ``problems`` count.
    """

    data: Any
    positions: dict[PathKey, int]
    problems: tuple[tuple[int, str], ...]
    complete: bool
    dropped: frozenset[PathKey] = frozenset()
    """Paths whose value was refused (a tag, a bad scalar) and read as None."""


def parse_yaml(text: str) -> ParsedYaml:
    """Read one YAML document safely into JSON-like values with the line of every path."""
    # Every character is at least one byte: only text that might fit is encoded to measure.
    size = len(text) if len(text) > MAX_BYTES else len(text.encode("utf-8", "replace"))
    if size > MAX_BYTES:
        problem = f"the file is {size} bytes; a definition may be at most {MAX_BYTES} bytes"
        return ParsedYaml(None, {}, ((1, problem),), complete=False)
    try:
        loader = SafeDefinitionLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        return ParsedYaml(None, {}, (_syntax_problem(exc),), complete=False)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        character = exc.character
        shown = f"#x{character:04x}" if isinstance(character, int) else repr(character)
        problem = f"invalid character {shown}: {exc.reason}"
        return ParsedYaml(None, {}, ((line, problem),), complete=False)
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error above is marked
        return ParsedYaml(None, {}, ((1, f"invalid YAML: {exc}"),), complete=False)
    if root is None:
        return ParsedYaml(None, {}, (), complete=True)
    builder = _Builder()
    try:
        data = builder.build(root, ())
    except _LimitExceeded as exc:
        return ParsedYaml(None, {}, (_syntax_problem(exc),), complete=False)
    return ParsedYaml(
        data,
        builder.positions,
        tuple(builder.problems),
        complete=True,
        dropped=frozenset(builder.dropped),
    )


def _syntax_problem(exc: yaml.MarkedYAMLError) -> tuple[int, str]:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    if isinstance(exc, _LimitExceeded):
        return line, f"{exc.problem}; refusing to read it"
    if exc.context == "expected a single document in the stream":
        return line, "a definition file holds one YAML document, but a second one starts here"
    message = f"invalid YAML: {exc.problem or exc.context or 'unreadable document'}"
    if exc.context and exc.problem:
        message += f" ({exc.context}"
        if exc.context_mark is not None and exc.context_mark.line + 1 != line:
            message += f" on line {exc.context_mark.line + 1}"
        message += ")"
    return line, message


def _show_tag(tag: str) -> str:
    shown = "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class _Builder:
    """Turns a composed node tree into plain values, recording lines and problems."""

    def __init__(self) -> None:
        self.positions: dict[PathKey, int] = {}
        self.problems: list[tuple[int, str]] = []
        self.dropped: set[PathKey] = set()
        self._nodes = 0
        self._active: set[int] = set()
        # The scalar constructors only read a node's text, so one bare instance serves all.
        self._constructor = SafeConstructor()

    def _count(self, node: Node) -> None:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _LimitExceeded(
                problem=f"the document expands to more than {MAX_NODES} values (an alias bomb?)",
                problem_mark=node.start_mark,
            )

    def build(self, node: Node, path: PathKey) -> Any:
        """The plain value of ``node``; problems are recorded and the value is None."""
        self._count(node)
        self.positions.setdefault(path, _line(node))
        if id(node) in self._active:
            line = self.positions[path]  # the alias's own place; the node is where it began
            self.problems.append((line, "an alias refers to a value that contains it"))
            self.dropped.add(path)
            return None
        if isinstance(node, ScalarNode):
            problems = len(self.problems)
            value = self._scalar(node)
            if len(self.problems) > problems:
                self.dropped.add(path)
            return value
        expected = _MAP if isinstance(node, MappingNode) else _SEQ
        if node.tag != expected:
            self.problems.append((_line(node), f"tag {_show_tag(node.tag)} is not allowed"))
            self.dropped.add(path)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode) -> Any:
        constructors: dict[str, Callable[[SafeConstructor, ScalarNode], Any]] = {
            _INT: SafeConstructor.construct_yaml_int,
            _FLOAT: SafeConstructor.construct_yaml_float,
            _BOOL: SafeConstructor.construct_yaml_bool,
            _NULL: SafeConstructor.construct_yaml_null,
        }
        if node.tag == _STR:
            return node.value
        construct = constructors.get(node.tag)
        if construct is None:
            self.problems.append((_line(node), f"tag {_show_tag(node.tag)} is not allowed"))
            return None
        try:
            value = construct(self._constructor, node)
        except (ValueError, TypeError, KeyError, OverflowError):
            self.problems.append(
                (_line(node), f"{node.value!r} is not a valid {_show_tag(node.tag)} value")
            )
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problems.append((_line(node), f"{node.value!r} is not a finite number"))
            return None
        return value

    def _mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in self._entries(node, explicit=True):
            key = self._key(key_node)
            if key is None:
                continue
            if key in first_line:
                self.problems.append(
                    (
                        _line(key_node),
                        f"duplicate key {key!r} (first on line {first_line[key]})",
                    )
                )
                continue
            first_line[key] = _line(key_node)
            self.positions[(*path, key)] = _line(key_node)
            result[key] = self.build(value_node, (*path, key))
        merged_keys = set(first_line)
        for key_node, value_node in self._entries(node, explicit=False):
            key = self._key(key_node)
            # Merged keys never override explicit ones, and earlier merge sources win.
            if key is None or key in merged_keys:
                continue
            merged_keys.add(key)
            self.positions[(*path, key)] = _line(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _entries(self, node: MappingNode, *, explicit: bool) -> list[tuple[Node, Node]]:
        """The explicit entries of a mapping, or those it merges in with ``<<``."""
        if explicit:
            return [(k, v) for k, v in node.value if k.tag != _MERGE]
        merged: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                self._count(source)
                if not isinstance(source, MappingNode) or id(source) in self._active:
                    self.problems.append(
                        (_line(source), "a merge key (<<) takes a mapping or a list of mappings")
                    )
                    continue
                self._active.add(id(source))
                try:
                    merged.extend(self._entries(source, explicit=True))
                    merged.extend(self._entries(source, explicit=False))
                finally:
                    self._active.discard(id(source))
        return merged

    def _key(self, node: Node) -> str | None:
        """A mapping key as the text the user wrote (``1:`` and ``yes:`` are "1" and "yes")."""
        self._count(node)
        if node.tag not in (_STR, _INT, _FLOAT, _BOOL, _NULL, _MAP, _SEQ):
            self.problems.append((_line(node), f"tag {_show_tag(node.tag)} is not allowed"))
        elif not isinstance(node, ScalarNode):
            self.problems.append((_line(node), "a mapping key must be a plain value"))
        else:
            return str(node.value)
        return None
