"""The sweep: thesis grids, custom grids, resume after SIGKILL, shards, merge, locked appends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cnn_deploy.bench.plan import Measurement
from cnn_deploy.bench.timing import TimingConfig, summarise
from cnn_deploy.cli import app
from cnn_deploy.errors import BenchError
from cnn_deploy.results import records
from cnn_deploy.results import store as results
from cnn_deploy.study import sweep

GRID = "conv_layers=1,2;batch=16,32"
KEYS = ["lenet_1c1f|b16|onnxruntime|fp32", "lenet_1c1f|b32|onnxruntime|fp32",
        "lenet_2c1f|b16|onnxruntime|fp32", "lenet_2c1f|b32|onnxruntime|fp32"]
runner = CliRunner()


def cli(*args: Any, code: int = 0) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(result.output) from result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{result.output}"
    return result


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line parses


# -- which cells -------------------------------------------------------------------
def test_thesis_groups_have_the_thesis_sizes_and_all_counts_each_cell_once() -> None:
    sizes = {g: len(sweep.group_cells(g)) for g in ("1", "2", "3", "4")}
    assert sizes == {"1": 45, "2": 45, "3": 25, "4": 25}
    everything = sweep.group_cells("all")
    assert len({c.key for c in everything}) == len(everything) < sum(sizes.values())
    assert sweep.group_cells("1")[0].key == "lenet_1c1f|b16|onnxruntime|fp32"
    assert sweep.group_cells("1")[8].batch == 4096
    assert {c.spec.neurons for c in sweep.group_cells("3")} == {128, 256, 512, 1024, 2048}
    assert {c.spec.depth for c in sweep.group_cells("4")} == {5, 10, 20, 40, 80}
    assert sweep.group_cells("all")[:45] == sweep.group_cells("1")  # groups in order, 1 first


def test_the_coverage_group_reaches_where_the_thesis_groups_do_not() -> None:
    """40 cells beyond the groups' ranges, and two nets at tiny batches whose weights pass a
    32 MB cache (what the latency model's DRAM term needs)."""
    from cnn_deploy.study import perfmodel as pm

    cells = sweep.group_cells("coverage")
    assert len(cells) == len({c.key for c in cells}) == 40
    assert {c.key for c in cells}.isdisjoint(c.key for c in sweep.group_cells("all"))
    assert min(c.batch for c in cells) == 1 and {c.spec.kernel for c in cells} == {3, 5}
    assert {c.spec.padding for c in cells} == {0, 1, 2} and min(c.spec.fc_layers for c in cells) == 0
    pts = [pm.Point(c.spec, c.batch, 1.0) for c in cells]
    assert pm.dram_identified(pts, 32.0)


def test_custom_grid_ranges_steps_and_factors() -> None:
    cells = sweep.parse_grid("fc_layers=1..2;batch=16..64*2;neurons=100,128")
    assert len(cells) == 2 * 3 * 2
    assert [c.batch for c in cells[:3]] == [16, 32, 64]  # batch varies fastest
    assert cells[0].key == "lenet_1c1f_n100|b16|onnxruntime|fp32"
    fig36 = sweep.parse_grid("neurons=128..2048:128;batch=256")
    assert [c.spec.neurons for c in fig36][:3] == [128, 256, 384] and len(fig36) == 16
    assert {c.batch for c in sweep.parse_grid("depth=5")} == {1024}  # default batch


@pytest.mark.parametrize("n", [1, 3, 7])
def test_shards_partition_the_grid_exactly_once(n: int) -> None:
    cells = sweep.group_cells("all")
    shards = [sweep.shard(cells, k, n) for k in range(1, n + 1)]
    keys = [c.key for s in shards for c in s]
    assert sorted(keys) == sorted(c.key for c in cells)
    assert len(keys) == len(set(keys))


def test_huge_cells_warm_up_once_and_estimate_grows_with_flops() -> None:
    small, huge = sweep.parse_grid("conv_layers=1;batch=16"), sweep.parse_grid(
        "conv_layers=5;depth=80;batch=4096")
    assert sweep.cell_timing(huge[0]).warmup_ms == 0.0
    assert sweep.cell_timing(small[0]).warmup_ms > 0
    assert sweep.estimate_seconds(huge) > sweep.estimate_seconds(small)
    assert sweep.cell_timing(small[0], "thesis") == TimingConfig.thesis()


def _cell(process: int, ms: float) -> Measurement:
    samples = [ms] * 20
    return Measurement(0, "onnxruntime", "onnxruntime", {}, "cpu", 16, 16, samples, 0,
                summarise(samples, 16), [], [], "noise", 1.0, process)


def test_thesis_loops_keep_the_median_loop_and_warn_on_drift() -> None:
    loops = [_cell(0, 1.0), _cell(1, 1.05), _cell(2, 1.2)]  # slower each loop
    cell = sweep.parse_grid("conv_layers=1;batch=16")[0]
    record = sweep._record(cell, loops, TimingConfig.thesis(), None, {"method": "thesis"}, {})
    assert record["process"] == 1 and record["processes"] == 3
    assert record["sweep"]["drift"] == pytest.approx(1.0 / 1.2 - 1)
    assert any("drifted" in w for w in record["warnings"])
    assert [len(loop["samples_ms"]) for loop in record["loops"]] == [20, 20, 20]


# -- the command -------------------------------------------------------------------
@pytest.mark.parametrize(("args", "match"), [
    (["--grid", "fc_layerz=1..3"], "unknown field 'fc_layerz'"),
    (["--grid", "fc_layers=3..1"], "cannot read fc_layers"),
    (["--grid", "batch"], "FIELD=VALUES"),
    (["--grid", "conv_layers=9"], "shrink"),
    (["--group", "5"], "--group takes one of"),
    (["--group", "1", "--grid", "batch=1"], "not both"),
    ([], "give --group 1|2|3|4|all|coverage or --grid"),
    (["--group", "1", "--shard", "3/2"], "--shard takes k/n"),
    (["--group", "1", "--method", "fast"], "--method takes one of"),
])
def test_bad_arguments_are_one_clear_line(args: list[str], match: str) -> None:
    result = cli("sweep", *args, "--dry-run", code=1)
    assert match in result.output


def test_dry_run_prints_count_and_estimate(tmp_path: Path) -> None:
    out = cli("sweep", "--group", "all", "--dry-run", "--results", tmp_path / "r.jsonl").stdout
    assert "121 cells" in out and "estimated time" in out
    out = cli("sweep", "--group", "1", "--shard", "2/4", "--dry-run",
              "--results", tmp_path / "r.jsonl").stdout
    assert out.startswith("11 cells")
    assert not (tmp_path / "r.jsonl").exists()


def test_sigkilled_sweep_resumes_without_losing_or_duplicating_cells(tmp_path: Path) -> None:
    killed = tmp_path / "killed.jsonl"
    command = [sys.executable, "-c", "from cnn_deploy.cli import main; main()", "sweep",
               "--grid", GRID, "--results", str(killed), "--duration", "0.4", "--passes", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (killed.is_file() and killed.read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "sweep ended too early"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker, mid-run
        proc.wait()
    before = results.read(killed).records
    assert 1 <= len(before) < len(KEYS)
    resumed = cli("sweep", "--grid", GRID, "--results", killed, "--duration", "0.01",
                  "--passes", "1")
    assert f"{len(before)} of 4 cells were already complete in" in resumed.output
    whole = tmp_path / "whole.jsonl"
    cli("sweep", "--grid", GRID, "--results", whole, "--duration", "0.01", "--passes", "1")
    final = [r["cell"] for r in _lines(killed)]
    assert sorted(final) == sorted(r["cell"] for r in _lines(whole)) == KEYS
    assert len(final) == len(set(final))
    record = _lines(killed)[0]
    assert record["kind"] == "bench" and record["sweep"]["method"] == "default"
    assert record["stats"]["iterations"] == len(record["samples_ms"]) >= 3


def test_passes_shuffle_the_cells_and_stop_where_the_interval_is_narrow(tmp_path: Path) -> None:
    out = tmp_path / "passes.jsonl"
    result = cli("sweep", "--grid", GRID, "--results", out, "--duration", "0.05", "--passes", "3")
    lines = _lines(out)
    by_cell: dict[str, list[int]] = {}
    for r in lines:
        by_cell.setdefault(r["cell"], []).append(r["sweep"]["pass"])
    assert sorted(by_cell) == KEYS
    for passes in by_cell.values():  # 2 passes always, a 3rd only for a wide interval
        assert passes in ([1, 2], [1, 2, 3])
    first_pass_end = max(i for i, r in enumerate(lines) if r["sweep"]["pass"] == 1)
    assert all(r["sweep"]["pass"] > 1 for r in lines[first_pass_end + 1:])
    assert f"{len(lines)} records appended" in result.output
    again = cli("sweep", "--grid", GRID, "--results", out, "--duration", "0.05", "--passes", "3")
    assert len(_lines(out)) == len(lines)  # complete: nothing runs twice
    assert "4 of 4 cells were already complete" in again.output
    dry = cli("sweep", "--grid", GRID, "--results", out, "--passes", "5", "--dry-run").stdout
    assert "0 complete" in dry and "at most 5 passes each" in dry
    wide = cli("sweep", "--grid", GRID, "--dry-run", "--passes", "0", code=1)
    assert "--passes must be within 1..20" in wide.output


def test_the_wanted_passes_follow_the_interval() -> None:
    from cnn_deploy.study.sweep import wants_pass

    steady = [([10.0] * 20, 100, None), ([10.01] * 20, 100, None)]
    noisy = [([10.0] * 20, 100, None), ([13.0] * 20, 100, None)]
    assert wants_pass([], 3) and wants_pass(steady[:1], 3)
    assert not wants_pass(steady, 3) and wants_pass(noisy, 3)
    assert not wants_pass(noisy + noisy[:1], 3)  # the limit
    assert not wants_pass(steady[:1], 1)


# -- results: merge and locked appends ------------------------------------------------
def _record(i: int, schema: int = results.SCHEMA_VERSION) -> dict[str, Any]:
    record = records.make_record("bench", "run", {"cell": f"c{i}", "batch": i}, {}, {})
    return {**record, "schema": schema, "time_utc": "2026-01-01T00:00:00Z"}


def test_merge_joins_and_drops_identical_records(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "m" / "merged.jsonl"
    for i in (0, 1):
        results.append(a, _record(i))
    for i in (1, 2):
        results.append(b, _record(i))
    result = cli("results", "merge", a, b, "-o", out)
    assert "3 records written" in result.output and "1 duplicates dropped" in result.output
    assert [r["cell"] for r in _lines(out)] == ["c0", "c1", "c2"]


def test_merge_refuses_mixed_schema_versions(tmp_path: Path) -> None:
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "merged.jsonl"
    results.append(a, _record(0))
    results.append(b, _record(1, schema=0))
    result = cli("results", "merge", a, b, "-o", out, code=1)
    assert "different schema versions" in result.output and "schema 0" in result.output
    assert not out.exists()


_WRITER = """
import sys
from pathlib import Path
from cnn_deploy.results import store as results
for i in range(60):
    results.append(Path(sys.argv[1]), {"schema": 1, "writer": sys.argv[2], "i": i,
                                       "pad": sys.argv[2] * 200_000})
"""


def test_concurrent_appends_from_two_processes_stay_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), w]) for w in "ab"]
    assert [p.wait() for p in procs] == [0, 0]
    lines = _lines(path)
    assert sorted((r["writer"], r["i"]) for r in lines) == sorted(
        (w, i) for w in "ab" for i in range(60))
    assert all(r["pad"] == r["writer"] * 200_000 for r in lines)


def test_library_errors_are_bench_errors() -> None:
    with pytest.raises(BenchError, match="--grid is empty"):
        sweep.parse_grid(" ; ")


@pytest.mark.slow
def test_train_epochs_records_accuracy_and_time_to_accuracy(tmp_path: Path) -> None:
    cells = sweep.parse_grid("fc_layers=0;batch=16,32")
    results = tmp_path / "s.jsonl"
    outcome = sweep.run_sweep(cells, results, group="grid", duration=0.05, train_epochs=1,
                              models=tmp_path / "models")
    assert len(outcome.records) == 2
    assert (tmp_path / "models" / "lenet_1c0f.pt").is_file()  # trained once for both cells
    for record in outcome.records:
        assert record["model"]["trained"] is True
        assert record["test_accuracy"] > 0.85
        assert set(record["time_to_accuracy"]) == {"90", "95", "97"}
        assert record["time_to_accuracy"]["90"] is not None


# -- backend options ---------------------------------------------------------------
def test_options_are_part_of_each_cell_so_another_setting_never_resumes_over_it() -> None:
    plain = sweep.group_cells("1", "torch")
    cuda = sweep.group_cells("1", "torch", {"device": "cuda", "threads": 2})
    assert plain[0].key == "lenet_1c1f|b16|torch|fp32"
    assert cuda[0].key == "lenet_1c1f|b16|torch[device=cuda,threads=2]|fp32"
    assert {c.key for c in plain}.isdisjoint(c.key for c in cuda)
    assert sweep.parse_grid("fc_layers=1;batch=16", "onnxruntime", {"threads": 1})[0].options == (
        ("threads", 1),)


def test_a_sweep_records_the_backend_options_it_ran_with(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    result = CliRunner().invoke(app, ["sweep", "--grid", "fc_layers=0;batch=8", "-b", "ort",
                                      "-o", "onnxruntime.threads=1", "--duration", "0.05", "--passes", "1",
                                      "--results", str(out)])
    assert result.exit_code == 0, result.output
    (record,) = _lines(out)
    assert record["cell"] == "lenet_1c0f|b8|onnxruntime[threads=1]|fp32"
    assert record["backend"]["options"]["threads"] == 1
    assert record["backend"]["label"] == "onnxruntime extended 1t"


@pytest.mark.parametrize(("args", "says"), [
    (["-b", "tensorrt", "--train-epochs", "1"], "--train-epochs with an engine backend"),
    (["-o", "torch.threads=1"], "options given for torch, but this sweep times onnxruntime"),
    (["-o", "onnxruntime.threads=0"], "must be at least 1"),
])
def test_sweep_backend_and_options_errors(args: list[str], says: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", "--grid", "fc_layers=1;batch=16", "--dry-run",
                                      "--results", str(tmp_path / "s.jsonl"), *args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert says in result.stderr


def test_tensorrt_sweeps_need_a_gpu_and_say_so_before_any_work(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import hide_gpus

    hide_gpus(monkeypatch)
    out = tmp_path / "s.jsonl"
    result = CliRunner().invoke(app, ["sweep", "--grid", "fc_layers=1;batch=16", "-b", "trt",
                                      "--precision", "fp16", "--results", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "sweep -b tensorrt needs an NVIDIA GPU" in result.stderr and not out.exists()
    dry = CliRunner().invoke(app, ["sweep", "--grid", "fc_layers=1;batch=16", "-b", "trt",
                                   "--dry-run", "--results", str(out)])
    assert dry.exit_code == 0 and "1 cells" in dry.stdout
    bad = CliRunner().invoke(app, ["sweep", "--grid", "fc_layers=1;batch=16", "--precision", "fp16",
                                   "--dry-run", "--results", str(out)])
    assert bad.exit_code == 1 and "fp16 with an engine backend" in bad.stderr
