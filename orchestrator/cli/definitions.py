"""``saga definitions``: check saga definition files."""

from __future__ import annotations

import os

import click

from orchestrator.definitions import (
    DefinitionInvalid,
    DefinitionProblem,
    DefinitionRegistry,
    LoadedDefinition,
    definition_files,
    load_file,
)
from orchestrator.definitions.durations import format_duration
from orchestrator.definitions.model import SagaDefinition

__all__ = ["definitions", "validate"]


@click.group()
def definitions() -> None:
    """Work with saga definitions (YAML)."""


@definitions.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=str))
def validate(files: tuple[str, ...]) -> None:
    """Check FILES (or every *.yaml/*.yml in a folder given instead of a file).

    Prints each problem as file:line: message on stderr and exits 1 if there is any;
    a (name, version) defined in two of the files counts as a problem too.
    """
    problems: list[DefinitionProblem] = []
    loaded: list[LoadedDefinition] = []
    for path in _expand(files, problems):
        try:
            loaded.append(load_file(path))
        except DefinitionInvalid as exc:
            problems.extend(exc.errors)
    try:
        DefinitionRegistry(loaded)
    except DefinitionInvalid as exc:
        problems.extend(exc.errors)
    failed = {problem.source for problem in problems}
    for item in loaded:
        if item.source not in failed:
            definition = item.definition
            click.echo(
                f"ok  {item.source}  {definition.name} v{definition.version}"
                f" ({_outline(definition)})"
            )
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        # SystemExit, not ctx.exit: main() runs click with standalone_mode=False, where
        # ctx.exit's code is returned rather than used as the exit status.
        raise SystemExit(1)


def _outline(definition: SagaDefinition) -> str:
    """``4 steps, 1 parallel group, pivot confirm_order, deadline 2m``: what the file holds."""
    count = len(definition.steps)
    parts = [f"{count} step" if count == 1 else f"{count} steps"]
    groups = len({step.group for step in definition.steps if step.group is not None})
    if groups:
        parts.append(f"{groups} parallel group" + ("s" if groups > 1 else ""))
    if definition.pivot is not None:
        parts.append(f"pivot {definition.steps[definition.pivot].name}")
    if definition.deadline is not None:
        parts.append(f"deadline {format_duration(definition.deadline)}")
    return ", ".join(parts)


def _expand(paths: tuple[str, ...], problems: list[DefinitionProblem]) -> list[str]:
    """The files to check: files as given, folders replaced by their definition files."""
    files: list[str] = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)  # a missing file is reported by the loader, as a problem
            continue
        found = definition_files(path)
        if not found:
            problems.append(
                DefinitionProblem(path, None, "no *.yaml or *.yml files in this folder")
            )
        files.extend(str(file) for file in found)
    # The same file named twice (directly and through its folder) is checked once.
    unique: dict[str, str] = {}
    for file in files:
        unique.setdefault(os.path.realpath(file), file)
    return list(unique.values())
