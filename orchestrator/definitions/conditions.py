"""Step conditions (``when:``): a small, safe expression language, parsed at load.

    when: ${input.express} == true and not (${input.country} == "US" or ${input.total} >= 100)

Values are ``${...}`` references (as in payloads), literals (numbers, ``"text"`` or
``'text'``, ``true``, ``false``, ``null``) and parentheses; operators are ``==``,
``!=``, ``<``, ``<=``, ``>``, ``>=``, ``and``, ``or`` and ``not``. Nothing else: no
calls, no attribute access, no code runs. A reference that finds nothing is ``null``
(so ``${input.express} == true`` is false when the input has no ``express``). ``and``,
``or`` and ``not`` take JSON truthiness (``null``, ``false``, ``0``, ``""``, ``[]`` and
``{}`` are false); ``<``... compare two numbers or two strings, and anything else is a
:class:`ConditionError` at run time (the step fails for good with ``bad_condition``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.definitions.errors import MissingReference
from orchestrator.definitions.references import (
    JSON,
    Reference,
    ReferenceContext,
    ReferenceSyntaxError,
    parse_reference,
    resolve,
)

__all__ = ["Condition", "ConditionError", "ConditionSyntaxError", "parse_condition"]

MAX_LENGTH = 2000
"""Longest condition text accepted."""
MAX_DEPTH = 32
"""Deepest nesting of parentheses and ``not``."""


class ConditionSyntaxError(ValueError):
    """The text is not a condition; the message says what and at which column."""


class ConditionError(ValueError):
    """A condition could not be evaluated on these values (say, ``"a" < 1``)."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<ref>\$\{[^}]*\}?)
      | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'[^']*')
      | (?P<op>==|!=|<=|>=|<|>|\(|\))
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_WORDS = {"true": True, "false": False, "null": None}
_KEYWORDS = ("and", "or", "not")
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int


@dataclass(frozen=True)
class _Value:
    value: JSON


@dataclass(frozen=True)
class _Ref:
    ref: Reference


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _Logic:
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Compare:
    op: str
    left: _Node
    right: _Node


_Node = _Value | _Ref | _Not | _Logic | _Compare


@dataclass(frozen=True)
class Condition:
    """A parsed ``when:``; :meth:`holds` evaluates it against a saga's values."""

    text: str
    _root: _Node

    def holds(self, context: ReferenceContext) -> bool:
        """True when the step should run; ConditionError when it cannot be evaluated."""
        return _truthy(_evaluate(self._root, context))

    def references(self) -> Iterator[Reference]:
        """Every reference the condition reads."""
        yield from _references(self._root)


def parse_condition(text: str) -> Condition:
    """Parse a condition; ConditionSyntaxError says what is wrong and where."""
    if len(text) > MAX_LENGTH:
        raise ConditionSyntaxError(f"a condition may be at most {MAX_LENGTH} characters long")
    tokens = list(_tokens(text))
    if not tokens:
        raise ConditionSyntaxError("the condition is empty")
    parser = _Parser(text, tokens)
    root = parser.expression(0)
    if parser.position < len(tokens):
        raise parser.unexpected(tokens[parser.position])
    return Condition(text, root)


def _tokens(text: str) -> Iterator[_Token]:
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            return  # only trailing whitespace is left
        kind = match.lastgroup
        column = match.start(kind) + 1
        token = match.group(kind)
        if kind == "bad":
            raise ConditionSyntaxError(f"unexpected {token!r} at column {column}")
        if kind == "word" and token not in _WORDS and token not in _KEYWORDS:
            raise ConditionSyntaxError(
                f"unknown word {token!r} at column {column}: values are ${{...}} references, "
                "numbers, quoted text, true, false or null; operators are ==, !=, <, <=, >, >=, "
                "and, or, not"
            )
        yield _Token(kind, token, column)
        position = match.end()


class _Parser:
    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.position = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise ConditionSyntaxError("the condition ends too early: a value is missing")
        self.position += 1
        return token

    def unexpected(self, token: _Token) -> ConditionSyntaxError:
        return ConditionSyntaxError(f"unexpected {token.text!r} at column {token.column}")

    def expression(self, depth: int) -> _Node:
        return self.either(depth)

    def either(self, depth: int) -> _Node:
        node = self.both(depth)
        while (token := self.peek()) is not None and token.text == "or":
            self.take()
            node = _Logic("or", node, self.both(depth))
        return node

    def both(self, depth: int) -> _Node:
        node = self.negation(depth)
        while (token := self.peek()) is not None and token.text == "and":
            self.take()
            node = _Logic("and", node, self.negation(depth))
        return node

    def negation(self, depth: int) -> _Node:
        token = self.peek()
        if token is not None and token.text == "not":
            self.take()
            return _Not(self.negation(self.deeper(depth, token)))
        return self.comparison(depth)

    def comparison(self, depth: int) -> _Node:
        left = self.atom(depth)
        token = self.peek()
        if token is not None and token.text in _COMPARE:
            self.take()
            right = self.atom(depth)
            following = self.peek()
            if following is not None and following.text in _COMPARE:
                raise ConditionSyntaxError(
                    f"comparisons do not chain (column {following.column}): join them with and"
                )
            return _Compare(token.text, left, right)
        return left

    def atom(self, depth: int) -> _Node:
        token = self.take()
        if token.text == "(":
            node = self.expression(self.deeper(depth, token))
            closing = self.peek()
            if closing is None or closing.text != ")":
                raise ConditionSyntaxError(f"the '(' at column {token.column} is never closed")
            self.take()
            return node
        if token.kind == "ref":
            if not token.text.endswith("}"):
                raise ConditionSyntaxError(
                    f"unterminated reference at column {token.column}: a '}}' is missing"
                )
            try:
                return _Ref(parse_reference(token.text[2:-1]))
            except ReferenceSyntaxError as exc:
                raise ConditionSyntaxError(f"{exc} (column {token.column})") from None
        if token.kind == "number":
            return _Value(json.loads(token.text))
        if token.kind == "string":
            if token.text.startswith('"'):
                try:
                    return _Value(json.loads(token.text))
                except json.JSONDecodeError:
                    raise ConditionSyntaxError(
                        f"bad escape in the text at column {token.column}"
                    ) from None
            return _Value(token.text[1:-1])
        if token.kind == "word" and token.text in _WORDS:
            return _Value(_WORDS[token.text])
        raise self.unexpected(token)

    def deeper(self, depth: int, token: _Token) -> int:
        if depth >= MAX_DEPTH:
            raise ConditionSyntaxError(
                f"the condition nests deeper than {MAX_DEPTH} levels (column {token.column})"
            )
        return depth + 1


def _references(node: _Node) -> Iterator[Reference]:
    if isinstance(node, _Ref):
        yield node.ref
    elif isinstance(node, _Not):
        yield from _references(node.operand)
    elif isinstance(node, _Logic | _Compare):
        yield from _references(node.left)
        yield from _references(node.right)


def _evaluate(node: _Node, context: ReferenceContext) -> JSON:
    if isinstance(node, _Value):
        return node.value
    if isinstance(node, _Ref):
        try:
            return resolve(node.ref, context)
        except MissingReference:
            return None
    if isinstance(node, _Not):
        return not _truthy(_evaluate(node.operand, context))
    if isinstance(node, _Logic):
        left = _truthy(_evaluate(node.left, context))
        if node.op == "and":
            return left and _truthy(_evaluate(node.right, context))
        return left or _truthy(_evaluate(node.right, context))
    return _compare(node.op, _evaluate(node.left, context), _evaluate(node.right, context))


def _compare(op: str, left: JSON, right: JSON) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    numbers = _is_number(left) and _is_number(right)
    if not numbers and not (isinstance(left, str) and isinstance(right, str)):
        raise ConditionError(
            f"cannot compare {_shown(left)} {op} {_shown(right)}: "
            "<, <=, > and >= take two numbers or two texts"
        )
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _equal(left: JSON, right: JSON) -> bool:
    # JSON equality: true is not 1, and 1 equals 1.0.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    return bool(left == right)


def _is_number(value: JSON) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _truthy(value: JSON) -> bool:
    return bool(value)


def _shown(value: JSON) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."
