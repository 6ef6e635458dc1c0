"""Broken definitions: each reports the exact line and says what is wrong."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.definitions import MAX_STEPS, DefinitionInvalid, load_definition, load_text

from .helpers import MINIMAL, SOURCE, only_problem, problems_of

CASES = Path(__file__).parent / "cases"
EXPECTATION = re.compile(r"# line (\d+): (.+)\n")


def broken_cases() -> list[Any]:
    """Every file in cases/: its first line says ``# line N: fragment`` of its one problem."""
    params = []
    for path in sorted(CASES.glob("*.yaml")):
        match = EXPECTATION.match(path.read_text())
        assert match is not None, f"{path.name} lacks its '# line N: fragment' header"
        params.append(pytest.param(path, int(match[1]), match[2], id=path.stem))
    return params


@pytest.mark.parametrize(("path", "line", "fragment"), broken_cases())
def test_broken_definition_reports_line_and_cause(path: Path, line: int, fragment: str) -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        load_definition(path)
    errors = caught.value.errors
    assert len(errors) == 1, [str(e) for e in errors]
    assert (errors[0].source, errors[0].line) == (str(path), line), str(errors[0])
    assert fragment in errors[0].message, str(errors[0])
    assert str(errors[0]) == f"{path}:{line}: {errors[0].message}"


def test_there_are_many_kinds_of_broken_definition() -> None:
    assert len(broken_cases()) >= 50


@pytest.mark.parametrize("document", ["", "\n\n", "# nothing here\n", "---\n"])
def test_empty_file(document: str) -> None:
    problem = only_problem(document)
    assert (problem.line, problem.message) == (
        1,
        "the file is empty; a saga definition needs name, version and steps",
    )


def test_error_text_is_file_line_message() -> None:
    problem = only_problem(MINIMAL + "colour: red\n")
    assert str(problem) == (
        f"{SOURCE}:7: unknown key 'colour'; expected one of: "
        "name, version, description, input, defaults, deadline, steps, output"
    )


def test_python_tag_is_refused_and_never_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    documents = [
        'name: shop\nversion: 1\nsteps: !!python/object/apply:os.system ["touch pwned"]\n',
        "name: shop\nversion: 1\nsteps: [{name: a, participant: p, command: c}]\n"
        '!!python/object/apply:os.system ["touch pwned"]: 1\n',
        "name: !!python/name:os.system\nversion: 1\nsteps: []\n",
    ]
    lines = []
    for document in documents:
        errors = problems_of(document)
        assert "is not allowed" in errors[0].message
        assert errors[0].message.startswith("tag !!python/")
        lines.append(errors[0].line)
    assert lines == [3, 4, 1]
    assert not (tmp_path / "pwned").exists()
    assert list(tmp_path.iterdir()) == []


def test_python_tag_reports_nothing_more_about_the_refused_value() -> None:
    errors = problems_of(
        'name: shop\nversion: 1\nsteps: !!python/object/apply:os.system ["touch pwned"]\n'
    )
    assert [str(e) for e in errors] == [
        f"{SOURCE}:3: tag !!python/object/apply:os.system is not allowed"
    ]


BILLION_LAUGHS = """\
name: shop
version: 1
steps: [{name: a, participant: p, command: c}]
description: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.perf_counter()
    problem = only_problem(BILLION_LAUGHS)
    elapsed = time.perf_counter() - started
    assert "expands to more than" in problem.message
    assert "refusing to read it" in problem.message
    assert elapsed < 5.0  # unguarded, expanding 9**9 values would take minutes and gigabytes


def test_too_many_aliases_are_refused() -> None:
    aliases = ", ".join(["*x"] * 101)
    problem = only_problem(MINIMAL + f"description: &x lol\noutput: {{v: [{aliases}]}}\n")
    assert (problem.line, problem.message) == (
        8,
        "the document uses more than 100 aliases; refusing to read it",
    )


def test_deep_nesting_is_refused() -> None:
    problem = only_problem(MINIMAL + "output: {x: " + "[" * 200 + "]" * 200 + "}\n")
    assert "nested more than 64 levels deep" in problem.message


def test_oversized_text_is_refused() -> None:
    problem = only_problem(MINIMAL + "description: " + "x" * (1 << 20) + "\n")
    assert problem.line == 1
    assert "a definition may be at most 1048576 bytes" in problem.message


def test_more_than_max_steps() -> None:
    steps = "".join(
        f"  - {{name: s{i}, participant: p, command: c}}\n" for i in range(MAX_STEPS + 1)
    )
    problem = only_problem(f"name: shop\nversion: 1\nsteps:\n{steps}")
    assert (problem.line, problem.message) == (
        3,
        f"steps: a saga may have at most {MAX_STEPS} steps; this one has {MAX_STEPS + 1}",
    )


def test_exactly_max_steps_load() -> None:
    steps = "".join(f"  - {{name: s{i}, participant: p, command: c}}\n" for i in range(MAX_STEPS))
    definition = load_text(f"name: shop\nversion: 1\nsteps:\n{steps}", SOURCE)
    assert len(definition.steps) == MAX_STEPS


def test_every_error_in_a_file_is_reported_in_line_order() -> None:
    document = """\
    name: shop
    version: one
    colour: red
    defaults:
      timeout: 10
    steps:
      - name: reserve
        participant: inventory
        command: reserve
        timout: 5s
        payload:
          home: ${env.HOME}
          later: ${steps.charge.result.id}
      - name: charge
        participant: payments
        command: charge
        retry: {max_attempts: 0}
        compensation:
          payload: {}
      - name: reserve
        participant: inventory
        command: again
    output:
      id: ${steps.nope.result}
    """
    errors = problems_of(document)
    assert [(e.line, e.message) for e in errors] == [
        (2, 'version: expected an integer, got "one"'),
        (
            3,
            "unknown key 'colour'; expected one of: "
            "name, version, description, input, defaults, deadline, steps, output",
        ),
        (
            5,
            "defaults.timeout: bad duration 10: expected a number with a unit, "
            "like 250ms, 5s, 2m or 1h",
        ),
        (10, "unknown key 'timout' in step 'reserve'; did you mean 'timeout'?"),
        (
            12,
            "unknown reference ${env.HOME}: a reference is "
            "${input...}, ${steps.STEP.result...} or ${saga.id}",
        ),
        (13, "step 'reserve' refers to step 'charge', which does not run before it"),
        (17, "step 'charge' retry.max_attempts: must be at least 1, got 0"),
        (18, "step 'charge' compensation: missing required key 'command'"),
        (20, "steps[2] name: duplicate step name 'reserve' (first defined on line 7)"),
        (24, "output refers to unknown step 'nope'"),
    ]


def test_a_bad_default_is_reported_once_not_per_step() -> None:
    steps = "".join(f"  - {{name: s{i}, participant: p, command: c}}\n" for i in range(5))
    errors = problems_of(
        f"name: shop\nversion: 1\ndefaults:\n  retry: {{max_attempts: x}}\nsteps:\n{steps}"
    )
    assert [(e.line, e.message) for e in errors] == [
        (4, 'defaults.retry.max_attempts: expected an integer, got "x"')
    ]


def test_invalid_definition_message_lists_every_problem() -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        load_text(textwrap.dedent(MINIMAL) + "colour: red\nsize: 3\n", SOURCE)
    assert str(caught.value).splitlines() == [str(e) for e in caught.value.errors]
    assert len(caught.value.errors) == 2
