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
            count = len(definition.steps)
            steps = f"{count} step" if count == 1 else f"{count} steps"
            click.echo(f"ok  {item.source}  {definition.name} v{definition.version} ({steps})")
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        # SystemExit, not ctx.exit: main() runs click with standalone_mode=False, where
        # ctx.exit's code is returned rather than used as the exit status.
        raise SystemExit(1)


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
