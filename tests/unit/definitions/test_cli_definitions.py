"""``saga definitions validate``: output lines and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli

ENTRY_POINT = (sys.executable, "-c", "from orchestrator.cli import main; main()")
SAGAS = Path(__file__).resolve().parents[3] / "sagas"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["definitions", "validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_valid_files_print_one_ok_line_each() -> None:
    code, out, err = run(
        str(SAGAS / "express_order.yaml"),
        str(SAGAS / "order_checkout.yaml"),
        str(SAGAS / "profile_image_upload.yaml"),
    )
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"ok  {SAGAS / 'express_order.yaml'}  express_order v1"
        " (4 steps, 1 parallel group, pivot confirm_order, deadline 2m)",
        f"ok  {SAGAS / 'order_checkout.yaml'}  order_checkout v1 (3 steps)",
        f"ok  {SAGAS / 'profile_image_upload.yaml'}  profile_image_upload v1 (3 steps)",
    ]


def test_a_folder_stands_for_its_definition_files() -> None:
    code, out, _ = run(str(SAGAS), str(SAGAS / "order_checkout.yaml"))
    assert code == 0
    assert len(out.splitlines()) == 3  # the file named twice is checked once


def test_errors_go_to_stderr_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: shop\nversion: 1\nsteps:\n  - name: a\n    participant: p\n")
    good = tmp_path / "good.yaml"
    good.write_text("name: one\nversion: 1\nsteps: [{name: a, participant: p, command: c}]\n")
    code, out, err = run(str(bad), str(good))
    assert code == 1
    assert out.splitlines() == [f"ok  {good}  one v1 (1 step)"]
    assert err.splitlines() == [f"{bad}:4: step 'a': missing required key 'command'"]


def test_missing_file_is_an_error_line_not_a_traceback(tmp_path: Path) -> None:
    code, out, err = run(str(tmp_path / "nope.yaml"))
    assert (code, out) == (1, "")
    assert err == f"{tmp_path / 'nope.yaml'}: no such file\n"


def test_duplicates_across_the_given_files(tmp_path: Path) -> None:
    text = "name: shop\nversion: 1\nsteps: [{name: a, participant: p, command: c}]\n"
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    code, out, err = run(str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert code == 1
    assert out == f"ok  {tmp_path / 'a.yaml'}  shop v1 (1 step)\n"
    assert err == (
        f"{tmp_path / 'b.yaml'}:1: saga 'shop' version 1 is defined twice: "
        f"here and in {tmp_path / 'a.yaml'}:1\n"
    )


def test_empty_folder(tmp_path: Path) -> None:
    code, _, err = run(str(tmp_path))
    assert code == 1
    assert err == f"{tmp_path}: no *.yaml or *.yml files in this folder\n"


def test_no_arguments_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["definitions", "validate"])
    assert result.exit_code == 2


def test_console_script_exits_1_on_an_invalid_file(tmp_path: Path) -> None:
    # Through the real entry point, so the exit status survives main()'s error handling.
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: shop\n")
    process = subprocess.run(
        [*ENTRY_POINT, "definitions", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 1
    assert (
        process.stderr
        == f"{bad}:1: missing required key 'version'\n{bad}:1: missing required key 'steps'\n"
    )
