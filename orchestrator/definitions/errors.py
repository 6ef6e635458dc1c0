"""Errors of saga definitions: loading, looking up and rendering them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.errors import SagaError

__all__ = [
    "DefinitionError",
    "DefinitionInvalid",
    "DefinitionProblem",
    "MissingReference",
    "UnknownDefinition",
]


@dataclass(frozen=True)
class DefinitionProblem:
    """One thing wrong in a definition file: where (file and 1-based line) and what."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.source}: {self.message}"
        return f"{self.source}:{self.line}: {self.message}"


class DefinitionError(SagaError):
    """Root of the errors about saga definitions."""


class DefinitionInvalid(DefinitionError):
    """One or more definition files are wrong; ``errors`` lists every problem found."""

    def __init__(self, errors: Iterable[DefinitionProblem]) -> None:
        self.errors: tuple[DefinitionProblem, ...] = tuple(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


class UnknownDefinition(DefinitionError):
    """No definition has the asked name, or not the asked version."""


class MissingReference(DefinitionError):
    """A ``${...}`` reference found no value at run time; the step fails with ``bad_reference``."""

    code = "bad_reference"
    """The failure code a step gets when its payload cannot be rendered."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"no value at {path}")
