"""The benchmark harness's own logic: the arguments it accepts, how it summarises runs into
medians and ratios to the floor, and the /proc readings its CPU figures rest on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from bench import procstat, services, soak
from bench.__main__ import SUCCESS_ONLY_BY_DEFAULT, SYSTEMS, Plan, _parser, plan, summarise
from bench.floor import Floor
from bench.runner import RunResult, Workload, _percentile


def _run(system: str, rate: float, cpu: float, p99: float = 100.0) -> RunResult:
    return RunResult(
        system=system,
        workload="success, N=10, C=2",
        sagas_per_second=rate,
        p50_ms=10.0,
        p99_ms=p99,
        cpu_ms_per_saga={"orchestrator": cpu / 2, "postgresql": cpu / 2},
        peak_rss_mb={"orchestrator": 50.0},
        commits_per_saga=7.0,
        messages_per_saga=7.0,
        seconds=1.0,
    )


def test_summary_takes_medians_and_ratios_to_the_floor_of_the_same_workload() -> None:
    runs = [
        _run(Floor.name, 100, 6),
        _run(Floor.name, 300, 6),
        _run(Floor.name, 200, 6),
        _run("ours", 150, 9, p99=150),
        _run("ours", 140, 9, p99=150),
        _run("ours", 160, 12, p99=250),
    ]
    rows = {row["system"]: row for row in summarise(runs)}
    ours = rows["ours"]
    assert ours["sagas_per_second"] == 150
    assert (ours["sagas_per_second_min"], ours["sagas_per_second_max"]) == (140, 160)
    assert ours["throughput_vs_floor"] == pytest.approx(0.75)
    assert ours["cpu_vs_floor"] == pytest.approx(1.5)
    assert ours["p99_vs_floor"] == pytest.approx(1.5)
    assert rows[Floor.name]["throughput_vs_floor"] == 1


def test_percentile_of_a_known_list() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _percentile(values, 99) == pytest.approx(99.01)
    assert _percentile([5.0], 99) == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--systems", "floor,nosuch"], "--systems: unknown nosuch"),
        (["--concurrency", "ten"], "--concurrency: 'ten' is not a list of whole numbers"),
        (["--variants", "sometimes"], "--variants: sometimes"),
        (["--sagas", "0"], "must be at least 1"),
        (["--seeded", "0"], "--seeded must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = _parser()
    with pytest.raises(SystemExit) as exit_info:
        plan(parser.parse_args(["--systems", "floor,ours", *args]), parser)
    assert exit_info.value.code == 2
    assert error in capsys.readouterr().err


def test_the_default_plan_runs_both_variants_then_the_lower_concurrency() -> None:
    parser = _parser()
    matrix = plan(parser.parse_args(["--systems", "floor,ours"]), parser)
    assert [w.label for w in matrix.workloads] == [
        "success, N=2000, C=100",
        "compensation, N=2000, C=100",
        "success, N=2000, C=10",
    ]
    assert (matrix.systems, matrix.runs) == (["floor", "ours"], 3)


def test_sqlite_runs_both_variants_only_when_named() -> None:
    parser = _parser()
    named = plan(parser.parse_args(["--systems", "floor,ours-sqlite"]), parser)
    assert [named.systems_for(w) for w in named.workloads[:2]] == [["floor", "ours-sqlite"]] * 2
    success, compensation = Workload(10, 5, fail=False), Workload(10, 5, fail=True)
    default = Plan([success, compensation], ["floor", "ours-sqlite"], 3, SUCCESS_ONLY_BY_DEFAULT)
    assert default.systems_for(success) == ["floor", "ours-sqlite"]
    assert default.systems_for(compensation) == ["floor"]


def test_cpu_seconds_grow_with_work_and_count_the_process_itself() -> None:
    before = procstat.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert procstat.cpu_seconds(os.getpid()) - before >= 0.15
    assert os.getpid() in procstat.descendants([os.getpid()])
    assert procstat.peak_rss_mb(os.getpid()) > 1
    assert procstat.cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_the_seeded_and_two_orchestrator_rows_say_what_they_are() -> None:
    parser = _parser()
    matrix = plan(
        parser.parse_args(["--systems", "ours-2,ours-seeded,ours-asyncio", "--seeded", "5000"]),
        parser,
    )
    names = [SYSTEMS[name]().name for name in matrix.systems]
    assert names == [
        "saga orchestrator (postgresql, 2 orchestrators)",
        "saga orchestrator (postgresql, 5,000 finished sagas in the table)",
        "saga orchestrator (postgresql, asyncio event loop)",
    ]


def test_the_soak_table_shows_every_sampled_table_and_memory() -> None:
    assert procstat.rss_mb(os.getpid()) > 1
    assert procstat.rss_mb(2**22 + 12345) == 0.0
    rows = {name: 1000 * (index + 1) for index, name in enumerate(soak.TABLES)}
    point = {
        "sagas": 10_000,
        "sagas_per_second": 97.4,
        "cpu_ms_per_saga": {"orchestrator": 10.25, "postgresql": 3.0},
        "rows": rows,
        "rss_mb": {"o": 80.2},
    }
    console = Console(width=200, record=True)
    console.print(soak.table([point]))
    text = console.export_text()
    for shown in ("10,000", "97", "13.2", "80", "5,000", *soak.TABLES):
        assert shown in text


def test_a_second_benchmark_on_the_same_machine_is_refused_while_the_first_runs(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "bench.lock"
    with services.one_run_at_a_time(lock):
        with pytest.raises(services.ServiceError) as refused, services.one_run_at_a_time(lock):
            pass  # pragma: no cover
        assert f"process {os.getpid()}" in str(refused.value)
        assert "wait for it to end" in str(refused.value)
    with services.one_run_at_a_time(lock):  # released when the first run ends
        pass
