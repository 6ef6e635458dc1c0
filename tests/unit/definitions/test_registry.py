"""The definition registry: versions, lookups with sentences, folders, duplicates."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.definitions import (
    DefinitionInvalid,
    DefinitionRegistry,
    SagaDefinition,
    UnknownDefinition,
)

SAGAS = Path(__file__).resolve().parents[3] / "sagas"


def definition(name: str, version: int, *participants: str) -> SagaDefinition:
    steps = [
        {"name": f"s{i}", "participant": participant, "command": "go"}
        for i, participant in enumerate(participants or ("p",))
    ]
    return SagaDefinition.model_validate({"name": name, "version": version, "steps": steps})


def write(folder: Path, file: str, name: str, version: int) -> Path:
    path = folder / file
    path.write_text(
        f"name: {name}\nversion: {version}\nsteps: [{{name: a, participant: p, command: c}}]\n"
    )
    return path


def test_get_defaults_to_the_highest_version() -> None:
    registry = DefinitionRegistry.from_definitions(
        [definition("shop", 1), definition("shop", 3), definition("shop", 2)]
    )
    assert registry.get("shop").version == 3
    assert registry.get("shop", 1).version == 1
    assert registry.versions("shop") == (1, 2, 3)


def test_unknown_name_is_a_sentence() -> None:
    registry = DefinitionRegistry.from_definitions([definition("b", 1), definition("a", 1)])
    with pytest.raises(UnknownDefinition) as caught:
        registry.get("x")
    assert str(caught.value) == "no saga definition named 'x'; known: a, b"


def test_unknown_name_in_an_empty_registry() -> None:
    with pytest.raises(UnknownDefinition, match="known: none"):
        DefinitionRegistry().get("x")


def test_unknown_version_is_a_sentence() -> None:
    registry = DefinitionRegistry.from_definitions([definition("x", 1), definition("x", 2)])
    with pytest.raises(UnknownDefinition) as caught:
        registry.get("x", 3)
    assert str(caught.value) == "saga 'x' has no version 3; known versions: 1, 2"


def test_names_iteration_membership_and_participants() -> None:
    registry = DefinitionRegistry.from_definitions(
        [definition("b", 2, "inventory"), definition("a", 1, "payments", "inventory")]
    )
    assert registry.names() == ("a", "b")
    assert [d.key for d in registry] == [("a", 1), ("b", 2)]
    assert len(registry) == 2
    assert ("a", 1) in registry
    assert ("a", 2) not in registry
    assert registry.participants() == {"inventory", "payments"}


def test_from_definitions_refuses_duplicates() -> None:
    with pytest.raises(DefinitionInvalid, match="saga 'a' version 1 is defined twice"):
        DefinitionRegistry.from_definitions([definition("a", 1), definition("a", 1)])


def test_load_dir_reads_yaml_and_yml_only(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", "one", 1)
    write(tmp_path, "two.yml", "two", 1)
    (tmp_path / "notes.txt").write_text("not a definition")
    (tmp_path / ".hidden.yaml").write_text("broken: [")
    registry = DefinitionRegistry.load_dir(tmp_path)
    assert registry.names() == ("one", "two")
    assert registry.source("two", 1) == str(tmp_path / "two.yml")


def test_load_dir_collects_every_error_of_every_file(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", "good", 1)
    (tmp_path / "a.yaml").write_text("name: a\nversion: 1\nsteps: []\ncolour: red\n")
    (tmp_path / "b.yaml").write_text("name: b\nversion: zero\nsteps: [{name: s}]\n")
    with pytest.raises(DefinitionInvalid) as caught:
        DefinitionRegistry.load_dir(tmp_path)
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert [str(e) for e in caught.value.errors] == [
        f"{a}:3: steps: a saga needs at least one step",
        f"{a}:4: unknown key 'colour'; expected one of: "
        "name, version, description, input, defaults, deadline, steps, output",
        f'{b}:2: version: expected an integer, got "zero"',
        f"{b}:3: step 's': missing required key 'participant'",
        f"{b}:3: step 's': missing required key 'command'",
    ]


def test_same_name_and_version_in_two_files_names_both(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "shop", 1)
    second = write(tmp_path, "b.yaml", "shop", 1)
    write(tmp_path, "c.yaml", "shop", 2)
    with pytest.raises(DefinitionInvalid) as caught:
        DefinitionRegistry.load_dir(tmp_path)
    assert [str(e) for e in caught.value.errors] == [
        f"{second}:1: saga 'shop' version 1 is defined twice: here and in {first}:1"
    ]


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        DefinitionRegistry.load_dir(tmp_path / "nope")
    assert str(caught.value) == f"{tmp_path / 'nope'}: no such folder"


def test_shipped_folder_loads() -> None:
    registry = DefinitionRegistry.load_dir(SAGAS)
    assert registry.names() == ("express_order", "order_checkout", "profile_image_upload")
    assert registry.participants() == {
        "inventory",
        "payments",
        "notifications",
        "blobs",
        "profiles",
    }
