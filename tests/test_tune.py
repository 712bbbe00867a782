"""`cnndeploy tune` (bench/tune.py): candidates from the registry, the decision against the
defaults' intervals, the per-device file, and bench / sweep / stream applying it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cnn_deploy.backends.base import Target
from cnn_deploy.bench import tune
from cnn_deploy.bench.plan import Measurement, Plan
from cnn_deploy.bench.timing import summarise
from cnn_deploy.cli import app
from cnn_deploy.errors import BenchError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_candidates_start_with_the_defaults_and_are_all_valid() -> None:
    from cnn_deploy.backends import registry

    got = tune.candidates("onnxruntime")
    assert got[0] == {} and len(got) == len({json.dumps(c, sort_keys=True) for c in got}) == 12
    assert {"opt_level": "all"} in got and {"threads": 1, "spinning": False} in got
    for options in got:
        registry.get("onnxruntime").resolve(options)  # every candidate parses
    assert tune.candidates("openvino")[0] == {} and len(tune.candidates("openvino")) == 4


def fake_plan(levels: dict[str, float], spread: float = 0.01) -> Any:
    """run_plan's stand-in: each row at the tiles/ms ``levels`` gives for its opt_level."""

    def run_plan(plan: Plan, processes: int = 1) -> Iterator[Measurement]:
        for p in range(max(processes, 1)):
            for row, config in enumerate(plan.rows):
                for batch in plan.batches:
                    level = levels.get(config.options["opt_level"], 1.0)
                    if config.options.get("threads") == 1:
                        level /= 2
                    rng = np.random.default_rng(row * 10 + p)
                    ms = batch / level
                    samples = list(rng.normal(ms, ms * spread, 50))
                    yield Measurement(row, f"onnxruntime {config.options['opt_level']}", "onnxruntime",
                                      config.options, "cpu", batch, batch, samples, 2,
                                      summarise(samples, batch), [], [], "random", 1.0, p)

    return run_plan


def test_a_clear_winner_is_kept_and_a_noisy_one_is_not(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    from cnn_deploy.bench import workers

    target = Target("net", tmp_path / "m.onnx")
    monkeypatch.setattr(workers, "run_plan", fake_plan({"extended": 10.0, "all": 19.0}))
    (two,) = tune.search(target, ["onnxruntime"], [16, 1024], processes=2)
    assert not two.decided and two.best == {"opt_level": "all"}  # 2 processes never decide
    seen: list[tuple[int, str]] = []
    (choice,) = tune.search(target, ["onnxruntime"], [16, 1024], processes=3,
                            on_cell=lambda c: seen.append((c.process, c.label)))
    orders = [[label for p, label in seen if p == process] for process in range(3)]
    assert orders[0] != orders[1] or orders[1] != orders[2]  # each process its own order
    assert choice.decided and choice.options == {"opt_level": "all"}
    assert choice.gain == pytest.approx(1.9, rel=0.05)
    assert "tuned" in choice.verdict and len(choice.tried) == 12
    # 1 % faster with 10 % noise: the defaults stay (and a faster setting measured is named)
    monkeypatch.setattr(workers, "run_plan", fake_plan({"extended": 10.0, "all": 10.1}, spread=0.1))
    (choice,) = tune.search(target, ["onnxruntime"], [16], processes=3)
    assert not choice.decided and choice.options == {}
    assert choice.verdict.startswith("defaults")
    assert choice.best is None or "cannot tell" in choice.verdict


def write_tuning(options: dict[str, Any]) -> Path:
    from cnn_deploy.device import device_record

    path = tune.tuning_path(device_record())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "backends": {"onnxruntime": {"options": options}}}))
    return path


def test_apply_fills_only_backends_given_no_options() -> None:
    path = write_tuning({"opt_level": "all"})
    got, notes = tune.apply({}, ["onnxruntime", "torch"], path)
    assert got == {"onnxruntime": {"opt_level": "all"}} and "onnxruntime.opt_level=all" in notes[0]
    got, notes = tune.apply({"onnxruntime": {"threads": 1}}, ["onnxruntime"], path)
    assert got == {"onnxruntime": {"threads": 1}} and not notes  # the user's options win
    assert tune.apply({}, ["openvino"], path) == ({}, [])  # not benchmarked: untouched
    path.write_text(json.dumps({"schema": 1, "backends": {"onnxruntime": {"options": {"nope": 1}}}}))
    got, notes = tune.apply({}, ["onnxruntime"], path)
    assert got == {} and "do not apply" in notes[0]
    path.write_text(json.dumps({"schema": 1, "backends": {"onnxruntime": {"options": {
        "provider": "cuda"}}}}))  # never moves a backend to another provider
    got, notes = tune.apply({}, ["onnxruntime"], path)
    assert got == {} and "not tuned by `cnndeploy tune`" in notes[0]
    path.write_text(json.dumps({"schema": 1, "backends": {"onnxruntime": {
        "options": {"opt_level": "all"}, "versions": {"onnxruntime": "0.0.1"}}}}))
    got, notes = tune.apply({}, ["onnxruntime"], path)
    assert got == {} and "tuned with onnxruntime 0.0.1" in notes[0]
    path.write_text("{not json")
    with pytest.raises(BenchError, match=r"unreadable .* --no-tune"):
        tune.apply({}, ["onnxruntime"], path)
    assert tune.apply({}, ["onnxruntime"], path.with_name("none.json")) == ({}, [])


def test_bench_uses_the_tuning_file_unless_told_not_to() -> None:
    write_tuning({"opt_level": "all"})
    args = ["bench", "--spec", "lenet_1c1f", "-b", "onnxruntime", "--batch", "4", "--duration",
            "0.02", "--warmup", "0.01", "--iterations", "3", "--processes", "0", "--no-save"]
    tuned = runner.invoke(app, args)
    assert tuned.exit_code == 0, tuned.output
    assert "onnxruntime all" in tuned.stdout and "tuned for this device" in tuned.stderr
    raw = runner.invoke(app, [*args, "--no-tune"])
    assert raw.exit_code == 0 and "onnxruntime extended" in raw.stdout
    assert "tuned for this device" not in raw.stderr


def test_tune_command_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    result = runner.invoke(app, ["tune", "--spec", "lenet_1c1f", "-b", "openvino", "--batch", "4",
                                 "--processes", "1", "--duration", "0.05", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    entry = data["backends"]["openvino"]
    assert entry["net"] == "lenet_1c1f" and entry["batches"] == [4] and "openvino" in entry["versions"]
    assert len(entry["tried"]) == 4 and "verdict" in entry and "yes:" in result.stdout
    bad = runner.invoke(app, ["tune", "--spec", "lenet_1c1f", "--processes", "0"])
    assert bad.exit_code == 1 and "choose 1..20" in bad.stderr
    notes = tmp_path / "notes.json"
    notes.write_text("my notes")
    for args, says in ((["-o", str(notes)], "not a tuning file"), (["-o", str(tmp_path)], "folder"),
                       (["-o", str(tmp_path / "t.txt")], "a tuning file is .json"),
                       (["--duration", "nan"], r"choose seconds in \(0, 60\]")):
        refused = runner.invoke(app, ["tune", "--spec", "lenet_1c1f", "-b", "openvino", "--batch",
                                      "4", "--processes", "1", *args])
        assert refused.exit_code == 1 and re.search(says, refused.stderr), refused.output
    assert notes.read_text() == "my notes"
    # a second backend's tuning is added to the file, the first kept
    again = runner.invoke(app, ["tune", "--spec", "lenet_1c1f", "-b", "torch", "--batch", "4",
                                "--processes", "1", "--duration", "0.05", "-o", str(out),
                                "--precision", "fp16"])
    assert again.exit_code == 0, again.output
    assert set(json.loads(out.read_text())["backends"]) == {"openvino", "torch"}
    # --precision chooses the engines a TensorRT tune builds: where none is built, it says so
    assert "--precision fp16 was not used" in " ".join(again.stderr.split())


def test_a_torch_runner_puts_the_thread_count_back() -> None:
    """Candidates run one after another in one process: threads=1 must not leak into the next."""
    import torch

    from cnn_deploy.arch import NetSpec
    from cnn_deploy.backends import registry

    before = torch.get_num_threads()
    target = Target("lenet_1c1f", spec=NetSpec.from_name("lenet_1c1f"))
    with registry.runner("torch", target, {"threads": 1}):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def fake_engine_plan(by_level: dict[int, float], spread: float = 0.01) -> Any:
    """run_plan's stand-in for TensorRT: tiles/ms by the optimisation level in the engine's
    name (``..._O5.plan``), with ``spread`` noise, other samples in every call."""
    calls = iter(range(1 << 30))

    def run_plan(plan: Plan, processes: int = 1) -> Iterator[Measurement]:
        assert plan.target.engine is not None and plan.target.engine.is_file()
        level = int(plan.target.engine.stem.rsplit("_O", 1)[1])
        for row, config in enumerate(plan.rows):
            assert config.options == {**config.options, "cuda_graph": False}  # runner defaults
            for batch in plan.batches:
                ms = batch / by_level[level]
                rng = np.random.default_rng(next(calls))
                samples = list(rng.normal(ms, ms * spread, 50))
                yield Measurement(row, "tensorrt", "tensorrt", config.options, "cuda", batch,
                                  batch, samples, 2, summarise(samples, batch), [], [], "random",
                                  1.0, 0)

    return run_plan


def test_tensorrt_build_level_is_tuned_and_build_uses_it(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Given an ONNX file, tune builds one engine per optimisation level (reused by a rerun),
    times each, keeps a level that wins beyond the intervals, and `build` then builds at it
    unless --opt-level or --no-tune says otherwise."""
    from test_engine import H100, FakeTrt, _relu_onnx

    from cnn_deploy import engine, jobs
    from cnn_deploy.bench import workers

    fake = FakeTrt(weak_typing=True)
    levels_built: list[int] = []
    real_build = engine.build_engine

    def counting_build(onnx: Path, options: Any, out: Any = None, progress: Any = None) -> Any:
        levels_built.append(options.opt_level)
        return real_build(onnx, options, out, progress)

    monkeypatch.setattr(engine, "_builder_and_gpu", lambda: (fake, (H100, (9, 0))))
    monkeypatch.setattr(engine, "build_engine", counting_build)
    monkeypatch.setattr(workers, "run_plan", fake_engine_plan({3: 10.0, 4: 10.05, 5: 14.0}))
    onnx = _relu_onnx(tmp_path / "models" / "lenet_1c1f.onnx", "fp32")
    target = Target("lenet_1c1f", onnx)
    outcome = jobs.tune(target, ["tensorrt"], [16, 256], processes=3)
    assert levels_built == [3, 4, 5]
    assert sorted(p.name for p in Path("engines/nvidia-h100-80gb-hbm3-sm90/tune").glob("*.plan")) \
        == [f"lenet_1c1f_fp32_O{level}.plan" for level in (3, 4, 5)]
    (choice,) = outcome.choices
    assert choice.build and choice.decided and choice.options == {"opt_level": 5}
    entry = json.loads(outcome.path.read_text())["backends"]["tensorrt"]
    assert entry["options"] == {} and entry["build"]["options"] == {"opt_level": 5}
    assert len(entry["build"]["tried"]) == 3
    assert "cache_in" not in fake.calls  # no shared timing cache: each level picks its own
    jobs.tune(target, ["tensorrt"], [16, 256], processes=3)
    assert levels_built == [3, 4, 5]  # the engines of the first run are reused
    o5 = Path("engines/nvidia-h100-80gb-hbm3-sm90/tune/lenet_1c1f_fp32_O5.plan")
    o3 = o5.with_name("lenet_1c1f_fp32_O3.plan")
    key = (fake.__version__, H100, (9, 0), onnx, 256)
    assert engine._reusable(o5, *key, 5) and not engine._reusable(o5, *key, 3)
    assert engine._reusable(o3, *key, 3) and not engine._reusable(o3, *key, 5)
    assert engine._reusable(o5, *key)  # a sweep reuses an engine of any level
    assert not engine._reusable(o5, *key[:-1], 128, 5)  # optimised for another batch

    result = runner.invoke(app, ["build", str(onnx), "--max-batch", "256"])
    assert result.exit_code == 0, result.output
    assert "tensorrt.opt_level=5" in result.stderr and fake.config.builder_optimization_level == 5
    plan = Path("engines/nvidia-h100-80gb-hbm3-sm90/lenet_1c1f_fp32.json")
    assert json.loads(plan.read_text())["opt_level"] == 5
    for args, level in ((["--opt-level", "4"], 4), (["--no-tune"], 3)):
        fake.config.builder_optimization_level = 3
        result = runner.invoke(app, ["build", str(onnx), "--max-batch", "256", *args])
        assert result.exit_code == 0 and "opt_level=5" not in result.stderr, result.output
        assert fake.config.builder_optimization_level == level
    # a level that does not beat the default beyond the intervals is not kept
    monkeypatch.setattr(workers, "run_plan", fake_engine_plan({3: 10.0, 4: 10.05, 5: 10.02},
                                                                   spread=0.1))
    (choice,) = jobs.tune(target, ["tensorrt"], [16, 256], processes=3).choices
    assert not choice.decided and choice.options == {}
    assert tune.build_options("tensorrt", outcome.path) == ({}, None)


def _has_trt_builder() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return False
    import tensorrt

    return hasattr(tensorrt, "Builder")


@pytest.mark.skipif(_has_trt_builder(), reason="a TensorRT builder is installed here")
def test_tuning_tensorrt_without_a_builder_says_what_runs_here(tmp_path: Path) -> None:
    """No TensorRT builder here: named, it is a clear error before any timing; by default the
    backends that run here are tuned and TensorRT is left out."""
    from test_engine import _relu_onnx

    onnx = _relu_onnx(tmp_path / "m.onnx", "fp32")
    refused = runner.invoke(app, ["tune", str(onnx), "-b", "tensorrt", "--processes", "1"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert re.search(r"error: cannot tune tensorrt's build: .*usable here: ", refused.stderr)
    from cnn_deploy import jobs

    assert not jobs._runs_here("tensorrt")
    assert tune.build_candidates("tensorrt") == [{}, {"opt_level": 4}, {"opt_level": 5}]
    assert tune.candidates("tensorrt") == [{}, {"spin": True}, {"cuda_graph": True},
                                           {"cuda_graph": True, "spin": True}]


def test_profile_runs_the_tuned_setting_so_its_records_match_the_sweeps(tmp_path: Path) -> None:
    """A latency model takes profile rows of the backend setting its sweep ran: profile
    applies the tuning file as sweep does (and --no-tune does not)."""
    from cnn_deploy.results.tidy import load, tidy

    write_tuning({"opt_level": "all"})
    for flag, label in (([], "onnxruntime all"), (["--no-tune"], "onnxruntime extended")):
        out = tmp_path / f"p{len(flag)}.jsonl"
        done = runner.invoke(app, ["profile", "--spec", "lenet_1c1f", "--batch", "4", "--runs",
                                   "1", "--results", str(out), *flag])
        assert done.exit_code == 0, done.output
        (row, *_) = tidy(load([out])[0])
        assert row["backend"].startswith(label), row["backend"]
