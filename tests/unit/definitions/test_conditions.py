"""``when:`` conditions: parsed at load with a sentence and a column for every mistake,
evaluated on a saga's input and results without running any code."""

from __future__ import annotations

import re

import pytest

from orchestrator.definitions.conditions import (
    ConditionError,
    ConditionSyntaxError,
    parse_condition,
)
from orchestrator.definitions.references import ReferenceContext


def _holds(text: str, input: object = None, **results: object) -> bool:
    context = ReferenceContext(saga_id="s-1", input=input, results=results)
    return parse_condition(text).holds(context)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${input.express} == true", True),
        ("${input.express} != true", False),
        ("${input.total} >= 100", True),
        ("${input.total} < 100.5", False),
        ("${input.country} == 'DE' or ${input.country} == \"FR\"", True),
        ("not (${input.total} > 10 and ${input.express})", False),
        ("${input.missing} == null", True),
        ("${input.missing}", False),
        ("${input.tags}", True),
        ("${steps.check.result.ok} and ${saga.id} == 's-1'", True),
        ("${steps.absent.result.ok} == true", False),
        ("true", True),
        ("1 == 1.0", True),
        ("${input.express} == 1", False),
        ("'b' > 'a'", True),
        ("-2.5e1 < 0", True),
    ],
)
def test_conditions_evaluate_on_the_sagas_values(text: str, expected: bool) -> None:
    input = {"express": True, "total": 250, "country": "FR", "tags": ["x"]}
    assert _holds(text, input, check={"ok": True}) is expected


def test_and_or_not_bind_tighter_to_the_left_as_usual() -> None:
    assert _holds("true or false and false")  # and before or
    assert not _holds("not true or false")  # not before or


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("${input.a} ==", "ends too early"),
        ("${input.a} = 1", "unexpected '=' at column 12"),
        ("${input.a} == 1 == 2", "do not chain"),
        ("(${input.a} == 1", "never closed"),
        ("${env.HOME} == 'x'", "unknown reference ${env.HOME}"),
        ("${input.a == 1", "unterminated reference"),
        ("len(${input.a}) > 1", "unknown word 'len' at column 1"),
        ("${input.a} === 1", "unexpected '=' at column 14"),
        ("${input.a}.upper", "unexpected '.'"),
        ("1 2", "unexpected '2' at column 3"),
        ("not " * 40 + "true", "deeper than 32"),
    ],
)
def test_a_malformed_condition_says_what_and_where(text: str, message: str) -> None:
    with pytest.raises(ConditionSyntaxError, match=re.escape(message)):
        parse_condition(text)


def test_ordering_across_types_is_an_error_at_run_time() -> None:
    with pytest.raises(ConditionError, match=r'cannot compare "a" < 1'):
        _holds("'a' < 1")
    with pytest.raises(ConditionError, match="cannot compare null > 3"):
        _holds("${input.missing} > 3", {})


def test_references_are_listed_for_the_load_time_scope_check() -> None:
    condition = parse_condition("${input.a} == 1 or ${steps.b.result.c}")
    assert [ref.text for ref in condition.references()] == ["${input.a}", "${steps.b.result.c}"]
