"""Helpers for the definition tests: load text and get the problems back."""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.definitions import DefinitionInvalid, DefinitionProblem, load_text

SOURCE = "case.yaml"

MINIMAL = """\
name: shop
version: 1
steps:
  - name: reserve
    participant: inventory
    command: reserve
"""


def problems_of(text: str) -> list[DefinitionProblem]:
    """The problems loading ``text`` reports; fails the test if it loads."""
    with pytest.raises(DefinitionInvalid) as caught:
        load_text(textwrap.dedent(text), SOURCE)
    errors = list(caught.value.errors)
    assert errors, "DefinitionInvalid without problems"
    for error in errors:
        assert error.source == SOURCE
        assert str(error).startswith(f"{SOURCE}:{error.line}: ")
    return errors


def only_problem(text: str) -> DefinitionProblem:
    """The single problem loading ``text`` reports."""
    errors = problems_of(text)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]
