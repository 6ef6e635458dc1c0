"""The definitions the orchestrator knows, keyed by (name, version)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from orchestrator.definitions.errors import (
    DefinitionInvalid,
    DefinitionProblem,
    UnknownDefinition,
)
from orchestrator.definitions.loader import LoadedDefinition, load_file
from orchestrator.definitions.model import SagaDefinition

__all__ = ["DEFINITION_SUFFIXES", "DefinitionRegistry", "definition_files"]

DEFINITION_SUFFIXES = (".yaml", ".yml")
"""File name endings read as saga definitions."""


def definition_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The definition files directly in ``folder``, sorted; DefinitionInvalid if it is none."""
    path = Path(folder)
    if not path.exists():
        raise DefinitionInvalid([DefinitionProblem(str(path), None, "no such folder")])
    if not path.is_dir():
        raise DefinitionInvalid([DefinitionProblem(str(path), None, "is not a folder")])
    return sorted(
        entry
        for entry in path.iterdir()
        if entry.suffix in DEFINITION_SUFFIXES and not entry.name.startswith(".")
    )


class DefinitionRegistry:
    """Saga definitions by name and version; the newest version is the default."""

    def __init__(self, loaded: Iterable[LoadedDefinition] = ()) -> None:
        """Build from loaded definitions; DefinitionInvalid when a (name, version) repeats."""
        self._definitions: dict[tuple[str, int], SagaDefinition] = {}
        self._sources: dict[tuple[str, int], LoadedDefinition] = {}
        problems: list[DefinitionProblem] = []
        for item in loaded:
            key = item.definition.key
            first = self._sources.get(key)
            if first is not None:
                message = (
                    f"saga {key[0]!r} version {key[1]} is defined twice: "
                    f"here and in {first.source}:{first.line}"
                )
                problems.append(DefinitionProblem(item.source, item.line, message))
                continue
            self._definitions[key] = item.definition
            self._sources[key] = item
        if problems:
            raise DefinitionInvalid(problems)

    @classmethod
    def from_definitions(cls, definitions: Iterable[SagaDefinition]) -> DefinitionRegistry:
        """A registry of definitions built in code (tests, embedding)."""
        return cls(LoadedDefinition(d, f"<{d.name} v{d.version}>", 1) for d in definitions)

    @classmethod
    def load_dir(cls, folder: str | os.PathLike[str]) -> DefinitionRegistry:
        """Load every ``*.yaml``/``*.yml`` file in ``folder``.

        DefinitionInvalid lists every problem of every file, and (name, version) pairs
        defined in more than one file.
        """
        return cls.load_files(definition_files(folder))

    @classmethod
    def load_files(cls, files: Iterable[str | os.PathLike[str]]) -> DefinitionRegistry:
        """Load the given definition files together, reporting all problems at once."""
        loaded: list[LoadedDefinition] = []
        problems: list[DefinitionProblem] = []
        for file in files:
            try:
                loaded.append(load_file(file))
            except DefinitionInvalid as exc:
                problems.extend(exc.errors)
        try:
            registry = cls(loaded)
        except DefinitionInvalid as exc:
            problems.extend(exc.errors)
        if problems:
            raise DefinitionInvalid(problems)
        return registry

    def get(self, name: str, version: int | None = None) -> SagaDefinition:
        """The definition ``name`` at ``version`` (the highest when None); UnknownDefinition."""
        versions = self.versions(name)
        if version is None:
            return self._definitions[(name, versions[-1])]
        definition = self._definitions.get((name, version))
        if definition is None:
            known = ", ".join(str(v) for v in versions)
            raise UnknownDefinition(
                f"saga {name!r} has no version {version}; known versions: {known}"
            )
        return definition

    def source(self, name: str, version: int) -> str:
        """The file a definition came from (``<name vN>`` when built in code)."""
        try:
            return self._sources[(name, version)].source
        except KeyError:
            raise UnknownDefinition(f"saga {name!r} has no version {version}") from None

    def names(self) -> tuple[str, ...]:
        """Every saga name, sorted."""
        return tuple(sorted({name for name, _ in self._definitions}))

    def versions(self, name: str) -> tuple[int, ...]:
        """The versions of saga ``name``, ascending; UnknownDefinition when there are none."""
        versions = tuple(sorted(v for n, v in self._definitions if n == name))
        if not versions:
            known = ", ".join(self.names()) or "none (no definitions are loaded)"
            raise UnknownDefinition(f"no saga definition named {name!r}; known: {known}")
        return versions

    def participants(self) -> frozenset[str]:
        """Every participant any definition sends commands to (each needs a queue)."""
        return frozenset(step.participant for d in self for step in d.steps)

    def __iter__(self) -> Iterator[SagaDefinition]:
        return iter(self._definitions[key] for key in sorted(self._definitions))

    def __len__(self) -> int:
        return len(self._definitions)

    def __contains__(self, key: object) -> bool:
        return key in self._definitions

    def __repr__(self) -> str:
        keys = ", ".join(f"{n} v{v}" for n, v in sorted(self._definitions))
        return f"DefinitionRegistry({keys})"
