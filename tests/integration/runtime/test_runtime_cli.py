"""The ``saga`` command line against a running orchestrator, as a user types it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Rig
from testapp import trio_input

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The command line reads what the store gives on either database; SQLite is enough here
    (the store and runtime tests cover PostgreSQL)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'saga.db'}"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def _environment(rig: Rig, database_url: str | None) -> dict[str, str]:
    return {
        "SAGA_AMQP_URL": rig.amqp_url,
        "SAGA_DATABASE_URL": database_url or rig.database_url,
        "SAGA_DEFINITIONS": str(rig.definitions_dir),
    }


_DRIVER = """
import contextlib, io, json, sys
from orchestrator.cli import main
results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["saga", *args]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


async def saga_batch(rig: Rig, commands: list[list[str]]) -> list[Result]:
    """Run several ``saga`` commands through the real entry point in one interpreter
    (start-up costs more than the commands on this small machine); a traceback would
    escape ``main`` and fail the driver."""
    env = {**os.environ, **_environment(rig, None), "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DRIVER, json.dumps(commands),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return [Result(*row) for row in json.loads(out)]


async def saga(rig: Rig, *args: str, database_url: str | None = None) -> Result:
    """Run ``python -m orchestrator ARGS`` against the rig's broker, database, definitions."""
    env = {**os.environ, **_environment(rig, database_url), "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def one_sentence(result: Result) -> str:
    """A user mistake: a sentence on stderr, never a traceback."""
    assert result.code != 0
    assert "Traceback" not in result.err, result.err
    assert result.err.strip(), "nothing said on stderr"
    return result.err.strip()


async def test_start_prints_the_id_and_a_key_returns_the_same_saga(rig: Rig) -> None:
    payload = json.dumps(trio_input())
    first = await saga(rig, "start", "trio", "--input", payload, "--key", "k-1", "--json")
    assert first.code == 0, first.err
    created = json.loads(first.out)
    assert created["created"] is True
    again = await saga(rig, "start", "trio", "--input", payload, "--key", "k-1", "--json")
    assert json.loads(again.out) == {"id": created["id"], "created": False}
    plain = await saga(rig, "start", "trio", "--input", payload)
    assert plain.code == 0
    assert len(plain.out.split()) == 1  # the id alone on a line
    await rig.wait_terminal([created["id"], plain.out.strip()])


async def test_wait_exit_status_follows_the_outcome(rig: Rig) -> None:
    ok = await saga(rig, "start", "trio", "--input", json.dumps(trio_input()), "--wait", "--json")
    assert ok.code == 0, ok.err
    status = json.loads(ok.out)
    assert status["state"] == "completed"
    assert [step["state"] for step in status["steps"]] == ["succeeded"] * 3
    assert set(status) == {
        "id", "name", "version", "state", "input", "output", "error",
        "created_at", "updated_at", "steps",
    }  # fmt: skip
    failing = json.dumps(trio_input(b={"fail": "permanent"}))
    bad = await saga(rig, "start", "trio", "--input", failing, "--wait", "--timeout", "60")
    assert bad.code == 1
    assert "compensated" in bad.out


async def test_status_list_and_history_json_shapes(rig: Rig) -> None:
    [saga_id] = await rig.start([trio_input(a={"fail_times": 1})])
    await rig.wait_terminal([saga_id])
    status = json.loads((await saga(rig, "status", saga_id, "--json")).out)
    first = status["steps"][0]
    assert set(first) == {"name", "state", "attempts", "result", "error", "compensation"}
    assert first["attempts"] == 2
    listed = json.loads((await saga(rig, "list", "--json", "--state", "completed")).out)
    assert [row["id"] for row in listed] == [saga_id]
    assert set(listed[0]) == {"id", "name", "version", "state", "created_at", "updated_at"}
    history = json.loads((await saga(rig, "history", saga_id, "--json")).out)
    assert [entry["seq"] for entry in history] == list(range(1, len(history) + 1))
    assert history[0]["type"] == "started"
    assert history[-1]["type"] == "completed"
    assert set(history[0]) == {"seq", "at", "type", "step", "attempt", "detail"}
    types = [entry["type"] for entry in history]
    assert types.count("step_failed") == 1
    trace = json.loads((await saga(rig, "trace", saga_id, "--json")).out)
    attempts = [(s["step"], s["attempt"], s["outcome"]) for s in trace["spans"]]
    assert attempts == [
        ("a", 1, "failed"),
        ("a", 2, "succeeded"),
        ("b", 1, "succeeded"),
        ("c", 1, "succeeded"),
    ]
    human = await saga(rig, "trace", saga_id)
    assert "saga trio v1" in human.out
    assert human.out.count("succeeded") == 3


async def test_bulk_start_prints_ids_in_input_order(rig: Rig, tmp_path: Path) -> None:
    lines = [json.dumps({**trio_input(), "order": f"o-{n}"}) for n in range(3)]
    (tmp_path / "inputs.jsonl").write_text("\n".join(lines) + "\n")
    result = await saga(rig, "start", "trio", "--inputs", str(tmp_path / "inputs.jsonl"))
    assert result.code == 0, result.err
    ids = result.out.split()
    assert len(set(ids)) == 3
    await rig.wait_terminal(ids)


async def test_bulk_start_refuses_the_whole_file_naming_the_bad_line(
    rig: Rig, tmp_path: Path
) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text(json.dumps(trio_input()) + "\n{not json\n")
    message = one_sentence(await saga(rig, "start", "trio", "--inputs", str(path)))
    assert f"{path}:2" in message
    listed = json.loads((await saga(rig, "list", "--json")).out)
    assert listed == []  # nothing started


MISTAKES = [
    (["start", "nope", "--input", "{}"], "no saga definition named 'nope'"),
    (["start", "trio", "--input", "{bad"], "--input is not valid JSON"),
    (["start", "trio", "--input", "[1]"], "must be a JSON object"),
    (["start", "trio", "--input", "@/no/such/file.json"], "cannot read input file"),
    (["start", "trio"], "exactly one of --input or --inputs"),
    (["start", "trio", "--input", "{}", "--timeout", "soon"], "bad duration"),
    (["status", "00000000-0000-0000-0000-000000000000"], "no saga with id"),
    (["history", "no-such-saga"], "no saga with id"),
    (["list", "--state", "done"], "'done' is not one of"),
    (["list", "--limit", "-1"], "-1"),
    (["participant", "run", "nomodule:app"], "cannot import module 'nomodule'"),
    (["participant", "run", "json"], "expected MODULE:ATTR"),
]


async def test_user_mistakes_get_one_sentence(rig: Rig) -> None:
    results = await saga_batch(rig, [args for args, _ in MISTAKES])
    for (args, fragment), result in zip(MISTAKES, results, strict=True):
        assert fragment in one_sentence(result), (args, result.err)


async def test_a_mistake_through_the_real_entry_point(rig: Rig) -> None:
    result = await saga(rig, "status", "no-such-saga")
    assert result.code == 1
    assert result.err == "error: no saga with id no-such-saga\n"


async def test_start_without_an_orchestrator_exits_3_and_leaves_the_request_queued(
    rig: Rig,
) -> None:
    for service in rig.orchestrators:
        await service.stop()
    rig.orchestrators.clear()
    args = ["start", "trio", "--input", json.dumps(trio_input()), "--timeout", "1s"]
    result = await saga(rig, *args)
    assert result.code == 3
    assert "no orchestrator answered within 1s" in result.err
    await rig.start_orchestrator()  # the queued request is taken up now
    store = await rig.reader()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not (listed := await store.list_sagas(limit=0)):
        assert loop.time() < deadline, "the queued start request was never taken up"
        await asyncio.sleep(0.1)
    assert len(listed) == 1
    await rig.wait_terminal([listed[0].id])


async def test_orchestrator_refuses_an_unmigrated_database(rig: Rig, tmp_path: Path) -> None:
    fresh = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    current = await saga(rig, "db", "current", database_url=fresh)
    assert "not migrated" in current.out + current.err
    message = one_sentence(await saga(rig, "orchestrator", "run", database_url=fresh))
    assert "saga db upgrade" in message


async def test_orchestrator_refuses_invalid_definitions(rig: Rig, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.yaml").write_text("name: bad\nversion: 1\nsteps: []\n")
    message = one_sentence(await saga(rig, "orchestrator", "run", "--definitions", str(broken)))
    assert "bad.yaml:3" in message
    assert "refusing to start" in message


async def test_sigterm_stops_the_orchestrator_cleanly(rig: Rig) -> None:
    env = {**os.environ, **_environment(rig, None), "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", "orchestrator", "run",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    while True:  # the log line that says it consumes
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, "the orchestrator exited before it ran"
        if b"orchestrator running" in line:
            break
    [saga_id] = await rig.start([trio_input()])
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    await rig.wait_terminal([saga_id])
