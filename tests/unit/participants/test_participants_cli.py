"""``saga participant run MODULE:ATTR``: finding the Participant, and one sentence when it
cannot be found (the service itself is not started here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.cli.services import load_participant
from participants import Participant, ParticipantLoadError
from participants.examples import inventory


def _run(target: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``saga participant run TARGET``; expects it to fail, returns stderr."""
    monkeypatch.setattr(sys, "argv", ["saga", "participant", "run", target])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code not in (0, None)
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


@pytest.mark.parametrize(
    ("target", "sentence"),
    [
        (
            "inventory",
            "error: expected MODULE:ATTR (like myservice.app:inventory), got 'inventory'",
        ),
        (":app", "error: expected MODULE:ATTR (like myservice.app:inventory), got ':app'"),
        ("mod:", "error: expected MODULE:ATTR (like myservice.app:inventory), got 'mod:'"),
        (
            "no_such_module_xyz:app",
            "error: cannot import module 'no_such_module_xyz': "
            "No module named 'no_such_module_xyz'",
        ),
        (
            "participants.examples.inventory:nothing_here",
            "error: module 'participants.examples.inventory' has no attribute 'nothing_here'",
        ),
        (
            "participants.examples.inventory:metadata",
            "error: participants.examples.inventory:metadata is not a Participant (found MetaData)",
        ),
    ],
)
def test_a_bad_target_is_one_sentence_and_a_failure(
    target: str,
    sentence: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _run(target, monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(sentence), err


def test_a_module_that_fails_to_import_is_one_sentence_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken_participant_module.py").write_text(
        'raise RuntimeError("the settings file is missing")\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_participant_module", raising=False)
    err = _run("broken_participant_module:app", monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert "broken_participant_module" in lines[0]
    assert "the settings file is missing" in lines[0]


def test_a_good_target_is_the_participant_object() -> None:
    found = load_participant("participants.examples.inventory:app")
    assert found is inventory.app
    assert isinstance(found, Participant)


def test_load_errors_are_participant_load_errors() -> None:
    with pytest.raises(ParticipantLoadError):
        load_participant("no_colon_here")
