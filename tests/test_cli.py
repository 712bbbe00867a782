"""Behaviour tests for the `cnndeploy` command line, end to end on real MNIST and real files.

Every test checks the exit code and the text the user sees, and that no traceback leaks.
Benchmarks run with tiny timings and (but for one test) in-process (`--processes 0`).
"""

from __future__ import annotations

import csv
import functools
import gzip
import http.server
import io
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from cnn_deploy.cli import app
from cnn_deploy.data import MNIST_FILES

if TYPE_CHECKING:
    from conftest import Trained

FAST = ["--duration", "0.05", "--warmup", "0.01", "--iterations", "3"]
BASELINE = "torch eager NCHW [baseline]"
CHANNELS_LAST = "torch eager channels-last"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults such as models/ and results/ land in the test's folder, never in the repo."""
    monkeypatch.chdir(tmp_path)


def cli(*args: Any, code: int = 0) -> Result:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"cnndeploy {' '.join(map(str, args))} raised "
                             f"{result.exception!r}\n{result.output}") from result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == code, f"exit {result.exit_code}, wanted {code}:\n{result.output}"
    return result


def assert_fails(*args: Any, match: str) -> str:
    """Exit 1 with exactly one `error:` message on stderr matching ``match``; returns it."""
    result = cli(*args, code=1)
    err = result.stderr
    assert err.count("error:") == 1, err
    message = err[err.index("error:"):].strip()
    assert re.search(match, message, re.DOTALL), message
    assert "error:" not in result.stdout
    return message


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a rich table ("│ a │ b │"), continuation lines dropped."""
    rows = []
    for line in text.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            if cells[0]:
                rows.append(cells)
    return rows


def read_results(path: Path) -> Any:
    from cnn_deploy.results import store as results

    return results.read(path)


# -- --help ----------------------------------------------------------------------
COMMANDS = [["quickstart"], ["train"], ["export"], ["bench"], ["build"], ["profile"], ["backends"], ["data"],
            ["data", "download"], ["data", "info"], ["data", "video"], ["report"], ["compare"],
            ["stream"], ["tune"], ["model"], ["model", "fit"], ["model", "adapt"],
            ["model", "validate"], ["predict"], ["select"],
            ["sweep"], ["results"], ["results", "merge"]]


def _walk(group: Any, prefix: tuple[str, ...] = ()) -> Iterator[list[str]]:
    for name, command in getattr(group, "commands", {}).items():
        yield [*prefix, name]
        yield from _walk(command, (*prefix, name))


def test_every_command_is_covered_by_the_help_test() -> None:
    assert sorted(_walk(get_command(app))) == sorted(COMMANDS)


@pytest.mark.parametrize("command", [[], *COMMANDS], ids=lambda c: " ".join(c) or "cnndeploy")
def test_help_runs(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert "Usage:" in result.stdout
    assert result.stderr == ""


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage:" in result.output and "bench" in result.output
    assert "Traceback" not in result.output


# -- backends --------------------------------------------------------------------
def _backend_table() -> dict[tuple[str, str], tuple[str, str]]:
    rows = table_rows(cli("backends").stdout)
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def test_backends_lists_cpu_backends_as_usable() -> None:
    table = _backend_table()
    assert table[("torch", "cpu")][0] == "yes"
    assert table[("torch", "cpu")][1].startswith("torch ")
    assert table[("onnxruntime", "CPUExecutionProvider")][0] == "yes"
    assert ("tensorrt", "cuda") in table


def test_backends_says_why_cuda_is_not_usable() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    table = _backend_table()
    for key in (("torch", "cuda"), ("onnxruntime", "CUDAExecutionProvider"),
                ("onnxruntime", "TensorrtExecutionProvider")):
        usable, why = table[key]
        assert usable == "no", key
        assert len(why) > 10, key  # a reason, not an empty cell


@pytest.mark.gpu
def test_backends_sees_the_gpu() -> None:
    import torch

    usable, why = _backend_table()[("torch", "cuda")]
    assert usable == "yes"
    assert why == torch.cuda.get_device_name(0)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_backends_sees_tensorrt_on_a_gpu() -> None:
    import tensorrt

    usable, why = _backend_table()[("tensorrt", "cuda")]
    assert usable == "yes"
    assert tensorrt.__version__ in why and "sm_" in why


def test_backends_says_why_tensorrt_is_not_usable_here() -> None:
    import importlib.util

    usable, why = _backend_table()[("tensorrt", "cuda")]
    if importlib.util.find_spec("tensorrt") is None and importlib.util.find_spec(
            "tensorrt_lean") is None:
        assert usable == "no"
        assert "pip install" in why


# -- train -------------------------------------------------------------------------
def test_train_writes_a_checkpoint_with_metrics_and_milestones(tmp_path: Path,
                                                               mnist_dir: Path) -> None:
    import torch

    from cnn_deploy.data import dataset_sha256

    out = tmp_path / "ck" / "small.pt"
    result = cli("train", "lenet_1c1f", "--epochs", "1", "--subset", "2000", "--out", out)
    text = result.stdout
    assert re.search(r"lenet_1c1f: test accuracy \d+\.\d\d%, best validation \d+\.\d\d% at "
                     r"epoch 1 of 1", text), text
    assert re.search(r"time to validation accuracy .*90% .*, 95% .*, 97% ", text), text
    assert f"saved {out}" in text
    assert out.is_file() and not out.with_suffix(".pt.part").exists()

    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert ck["spec"]["name"] == "lenet_1c1f"
    assert 0.0 <= ck["metrics"]["test_accuracy"] <= 1.0
    assert f"{ck['metrics']['test_accuracy']:.2%}" in text
    assert ck["metrics"]["epochs_run"] == 1
    assert set(ck["milestones_seconds"]) == {"90%", "95%", "97%"}
    assert all(v is None or v > 0 for v in ck["milestones_seconds"].values())
    assert ck["dataset"]["sha256"] == dataset_sha256(mnist_dir)
    assert ck["dataset"]["train"] == 2000


def test_train_default_path_is_models_folder_of_the_working_directory(
        tmp_path: Path, mnist_dir: Path) -> None:
    result = cli("train", "lenet_1c1f", "--epochs", "1", "--subset", "500")
    assert (tmp_path / "models" / "lenet_1c1f.pt").is_file()
    assert "saved models/lenet_1c1f.pt" in result.stdout


# -- export ------------------------------------------------------------------------
def test_export_writes_checked_onnx_with_metadata_and_parity(trained: Trained,
                                                             tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch
    from onnx.external_data_helper import uses_external_data

    from cnn_deploy.files import file_sha256

    out = tmp_path / "exported" / "net.onnx"
    result = cli("export", trained.checkpoint, "--out", out, "--fp16", "--parity-tiles", "200")
    text = result.stdout
    fp16 = out.with_name("net_fp16.onnx")
    assert f"wrote {out} (opset 18, dynamic batch" in text
    assert f"wrote {fp16} (fp16 graph)" in text
    for label in ("fp32", "fp16"):
        assert re.search(rf"parity {label} vs PyTorch on 200 test digits: max abs error "
                         r"\d\.\d\de[-+]\d+, top-1 agreement \d+\.\d\d%", text), text
    assert sorted(p.name for p in out.parent.iterdir()) == ["net.onnx", "net_fp16.onnx"]

    ck = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    for path, precision in ((out, "fp32"), (fp16, "fp16")):
        proto = onnx.load(str(path))
        assert not any(uses_external_data(t) for t in proto.graph.initializer)
        (inp,) = proto.graph.input
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].HasField("dim_value")  # dynamic batch
        assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 at the boundary
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["cnn_deploy.spec"] == "lenet_1c1f"
        assert meta["cnn_deploy.precision"] == precision
        assert float(meta["cnn_deploy.test_accuracy"]) == ck["metrics"]["test_accuracy"]
        assert meta["cnn_deploy.checkpoint_sha256"] == file_sha256(trained.checkpoint)
        assert json.loads(meta["cnn_deploy.input"])["layout"] == "NCHW"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {inp.name: np.zeros((3, 1, 28, 28), np.float32)})
        assert logits.shape == (3, 10)


# -- bench -------------------------------------------------------------------------
def test_bench_table_and_results_records(trained: Trained, tmp_path: Path) -> None:
    from cnn_deploy.files import file_sha256
    from cnn_deploy.results.store import SCHEMA_VERSION

    results = tmp_path / "out" / "bench.jsonl"
    result = cli("bench", trained.onnx, "--backend", "onnxruntime,torch", "--batch", "1,4",
                 *FAST, "--processes", "0", "--results", results)
    rows = table_rows(result.stdout)
    labels = [r[0] for r in rows]
    assert labels[:2] == [BASELINE, BASELINE]  # the baseline row comes first
    assert labels.count(CHANNELS_LAST) == 2
    ort_labels = [x for x in labels if x.startswith("onnxruntime ")]
    assert len(ort_labels) == 2 and len(rows) == 6
    assert all(r[-1] == "1.00x" for r in rows if r[0] == BASELINE)
    assert all(re.fullmatch(r"\d+\.\d\dx", r[-1]) for r in rows)
    assert {(r[0], r[1]) for r in rows} == {(x, b) for x in (BASELINE, CHANNELS_LAST,
                                                            ort_labels[0]) for b in ("1", "4")}
    assert f"6 measurements appended to {results}" in result.stderr

    read = read_results(results)
    assert read.skipped == []
    records = read.records
    assert len(records) == 6
    assert {(r["backend"]["label"], r["batch"], r["process"]) for r in records} == {
        (x, b, 0) for x in (BASELINE, CHANNELS_LAST, ort_labels[0]) for b in (1, 4)}
    assert len({r["run_id"] for r in records}) == 1
    for r in records:
        assert r["schema"] == SCHEMA_VERSION and r["kind"] == "bench"
        assert r["device"]["kind"] == "cpu" and r["device"]["slug"]
        assert {"numpy", "torch", "onnxruntime", "onnx"} <= set(r["versions"])
        assert r["scenario"] == ("single-stream" if r["batch"] == 1 else "offline")
        assert len(r["samples_ms"]) >= 3 and all(s > 0 for s in r["samples_ms"])
        assert r["stats"]["iterations"] == len(r["samples_ms"])
        assert r["model"]["onnx_sha256"] == file_sha256(trained.onnx)
        assert r["model"]["trained"] is True
        assert r["input"] == "mnist test digits"
        assert r["precision"] == "fp32"
    options = {r["backend"]["label"]: r["backend"]["options"] for r in records}
    assert options[BASELINE]["memory_format"] == "contiguous"
    assert options[CHANNELS_LAST]["memory_format"] == "channels_last"
    assert options[ort_labels[0]]["opt_level"] in ort_labels[0]
    assert options[ort_labels[0]]["provider"] == "cpu"


def test_bench_json_output_parses(trained: Trained) -> None:
    result = cli("bench", trained.onnx, "--backend", "onnxruntime,torch", "--batch", "1",
                 *FAST, "--processes", "0", "--no-save", "--json")
    doc = json.loads(result.stdout)
    assert doc["model"]["spec"]["name"] == "lenet_1c1f"
    labels = {row["backend"] for row in doc["rows"]}
    assert {BASELINE, CHANNELS_LAST} <= labels and len(labels) == 3
    for row in doc["rows"]:
        assert row["batch"] == 1 and row["tiles_per_ms"] > 0 and row["iterations"] >= 3
    assert "appended" not in result.stderr  # --no-save


def test_bench_csv_output_parses(trained: Trained) -> None:
    result = cli("bench", trained.onnx, "--backend", "onnxruntime,torch", "--batch", "1,4",
                 *FAST, "--processes", "0", "--no-save", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6
    assert {"backend", "batch", "tiles_per_ms", "median_ms", "speedup_vs_baseline"} <= set(rows[0])
    assert {r["batch"] for r in rows} == {"1", "4"}
    assert all(float(r["tiles_per_ms"]) > 0 for r in rows)
    assert [float(r["speedup_vs_baseline"]) for r in rows if r["backend"] == BASELINE] == [1, 1]


def test_bench_in_fresh_processes(trained: Trained, tmp_path: Path) -> None:
    results = tmp_path / "fresh.jsonl"
    result = cli("bench", trained.onnx, "--backend", "onnxruntime", "--batch", "1", *FAST,
                 "--processes", "2", "--results", results)
    rows = table_rows(result.stdout)
    assert rows[0][0] == BASELINE and len(rows) == 2
    assert all(re.fullmatch(r"\d+% \(2p\)", r[-2]) for r in rows), rows  # the spread column
    records = read_results(results).records
    assert sorted((r["backend"]["label"], r["process"]) for r in records) == sorted(
        (r[0], p) for r in rows for p in (0, 1))
    assert all(r["processes"] == 2 for r in records)


def test_bench_spec_says_weights_are_untrained() -> None:
    result = cli("bench", "--spec", "lenet_5c1f", "--backend", "onnxruntime", "--batch", "1",
                 *FAST, "--processes", "0", "--no-save")
    assert "lenet_5c1f: tiles/ms" in result.stdout
    assert "note: lenet_5c1f: untrained weights (speed does not depend on them)" in result.stderr
    assert table_rows(result.stdout)[0][0] == BASELINE


def test_bench_checkpoint_without_onnx_exports_a_temporary_one(trained: Trained,
                                                                tmp_path: Path) -> None:
    checkpoint = shutil.copy(trained.checkpoint, tmp_path / "alone.pt")
    result = cli("bench", checkpoint, "--backend", "onnxruntime", "--batch", "1", *FAST,
                 "--processes", "0", "--no-save")
    assert table_rows(result.stdout)[0][0] == BASELINE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.pt"]  # nothing left behind


# -- a classifier not made by cnn_deploy ---------------------------------------
def foreign_onnx(path: Path, batch: int | str) -> Path:
    """3x8x8 images -> 5 scores: Conv + GlobalAveragePool + Flatten + Gemm, built by hand."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((2, 3, 3, 3)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.standard_normal((2, 5)).astype(np.float32), "g")]
    nodes = [helper.make_node("Conv", ["data", "w"], ["conv"]),
             helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "g"], ["scores"])]
    graph = helper.make_graph(
        nodes, "foreign", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 5])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_bench_foreign_onnx_with_fixed_batch(tmp_path: Path) -> None:
    model = foreign_onnx(tmp_path / "fixed.onnx", 4)
    results = tmp_path / "r.jsonl"
    result = cli("bench", model, "--backend", "onnxruntime,torch", "--batch", "1,4", *FAST,
                 "--processes", "0", "--results", results)
    rows = table_rows(result.stdout)
    assert [(r[1], r[-1]) for r in rows] == [("4", "-")]  # timed once, at 4; no speed-up
    assert rows[0][0].startswith("onnxruntime ")
    assert "fixed batch of 4: timed at 4, not 1" in result.stderr
    assert "there is no torch-eager baseline" in result.stderr
    (record,) = read_results(results).records
    assert (record["batch"], record["requested_batch"]) == (4, 4)  # 4 was asked for too
    # none of the batches asked for is the fixed one: the note names them all (it was lost)
    other = cli("bench", model, "--backend", "onnxruntime", "--batch", "1,16", *FAST,
                "--processes", "0", "--no-save")
    assert "fixed batch of 4: timed at 4, not 1, 16" in other.stderr
    assert record["model"]["spec"] is None
    assert record["input"] == "uniform noise 0..255"


def test_bench_foreign_onnx_with_dynamic_batch(tmp_path: Path) -> None:
    model = foreign_onnx(tmp_path / "dynamic.onnx", "N")
    result = cli("bench", model, "--batch", "1,4", *FAST, "--processes", "0", "--json",
                 "--no-save")
    doc = json.loads(result.stdout)
    assert [row["batch"] for row in doc["rows"]] == [1, 4]
    assert all(row["backend"].startswith("onnxruntime ") for row in doc["rows"])
    assert all(row["speedup_vs_baseline"] is None for row in doc["rows"])
    assert "no torch-eager baseline" in result.stderr
    assert "fixed batch" not in result.stderr


# -- bad input: one clear message, exit 1, no traceback ---------------------------
def test_missing_model_file() -> None:
    assert_fails("bench", "nothere.onnx", "--no-save", match=r"no ONNX file at nothere\.onnx")
    assert_fails("export", "nothere.pt", match=r"no checkpoint at nothere\.pt: .*`cnndeploy train")
    assert_fails("bench", "model.h5", "--no-save", match=r"expected a \.onnx or \.pt file")


def test_model_and_spec_are_exclusive(trained: Trained) -> None:
    neither = assert_fails("bench", "--no-save", match=r"give a model file .* or --spec NAME")
    assert "not both" not in neither
    assert_fails("bench", trained.onnx, "--spec", "lenet_1c1f", "--no-save",
          match=r"give a model file .* or --spec NAME, not both")


def test_corrupt_onnx(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_fails("bench", junk, "--no-save", match=r"junk\.onnx is not a readable ONNX file")


def test_onnx_whose_input_is_not_an_image_batch(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 784])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "flat.onnx"
    onnx.save(model, str(path))
    # default --processes 1: the error crosses from the worker process to this one
    message = assert_fails("bench", path, *FAST, "--batch", "1", "--no-save",
                    match=r"input 'x' is \(\?, 784\)")
    assert "expected one NCHW float image batch input (N, C, H, W)" in message


def test_checkpoint_whose_weights_do_not_match_its_spec(trained: Trained, tmp_path: Path) -> None:
    import torch

    from cnn_deploy.arch import NetSpec

    ck = torch.load(trained.checkpoint, map_location="cpu", weights_only=True)
    ck["spec"] = NetSpec.from_name("lenet_2c1f").to_dict()
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    match = r"do not match its spec lenet_2c1f .*`cnndeploy train lenet_2c1f`"
    assert_fails("export", bad, "--parity-tiles", "0", match=match)
    assert_fails("bench", bad, "--no-save", match=match)


def test_truncated_checkpoint(trained: Trained, tmp_path: Path) -> None:
    data = trained.checkpoint.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert_fails("export", cut, "--parity-tiles", "0",
          match=r"cut\.pt is not a readable cnn_deploy checkpoint .*`cnndeploy train")


def test_checkpoint_that_is_not_a_cnn_deploy_one(tmp_path: Path) -> None:
    import torch

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert_fails("export", other, "--parity-tiles", "0", match=r"not a cnn_deploy checkpoint")


@pytest.fixture
def damaged_data(tmp_path: Path, mnist_dir: Path) -> Any:
    """A --data folder with three real files and a plain IDX test-label file to damage."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    *good, labels_stem = MNIST_FILES.values()

    def source(stem: str) -> Path:
        return next(p for p in (mnist_dir / f"{stem}.gz", mnist_dir / stem) if p.is_file())

    for stem in good:
        (folder / source(stem).name).symlink_to(source(stem).resolve())
    labels = source(labels_stem).read_bytes()
    if labels[:2] == b"\x1f\x8b":
        labels = gzip.decompress(labels)

    def damage(kind: str) -> Path:
        target = folder / labels_stem
        if kind == "truncated":
            target.write_bytes(labels[: len(labels) // 2])
        else:
            target.write_bytes(b"\x08\x03" + labels[2:])
        return folder

    damage.full_size = len(labels) - 8  # type: ignore[attr-defined]
    return damage


@pytest.mark.parametrize("command", [["train", "lenet_1c1f", "--epochs", "1"], ["data", "info"]],
                         ids=["train", "data-info"])
@pytest.mark.parametrize("kind", ["truncated", "magic"])
def test_damaged_idx_file(damaged_data: Any, command: list[str], kind: str) -> None:
    folder = damaged_data(kind)
    if kind == "truncated":
        n = damaged_data.full_size
        found = (n + 8) // 2 - 8
        match = rf"t10k-labels-idx1-ubyte: truncated: expected {n} bytes, found {found}"
    else:
        match = r"t10k-labels-idx1-ubyte: not an IDX file \(magic bytes 08 03 08 01\)"
    message = assert_fails(*command, "--data", folder, match=match)
    assert "cnndeploy data download" in message


def test_data_info_on_the_real_folder(mnist_dir: Path) -> None:
    result = cli("data", "info", "--data", mnist_dir)
    assert re.search(r"\d+ training and 10000 test digits, sha256 [0-9a-f]{16}\.\.\.",
                     result.stdout), result.stdout


@pytest.mark.parametrize("command", [["train", "lenet_1c1f"], ["data", "info"]],
                         ids=["train", "data-info"])
def test_missing_mnist_folder(command: list[str]) -> None:
    assert_fails(*command, "--data", "/nonexistent",
          match=r"--data /nonexistent is not a folder; .*`cnndeploy data download`")


def test_unknown_backend(trained: Trained) -> None:
    assert_fails("bench", trained.onnx, "--backend", "tensorflow", "--no-save",
          match=r"unknown backend 'tensorflow': choose from torch, onnxruntime")


def test_unknown_backend_option(trained: Trained) -> None:
    assert_fails("bench", trained.onnx, "-o", "tensorflow.threads=1", "--no-save", "--processes", "0",
          match=r"unknown backend 'tensorflow': choose from torch, onnxruntime")
    assert_fails("bench", trained.onnx, "-o", "threads", "--no-save", match=r"BACKEND\.KEY=VALUE")


def test_malformed_network_name_suggests_the_right_one() -> None:
    assert_fails("train", "lenet3c1f", match=r"'lenet3c1f' is not a network name.*"
                                      r"Did you mean 'lenet_3c1f'\?")
    assert_fails("bench", "--spec", "LeNet-2c-1f", "--no-save", match=r"Did you mean 'lenet_2c1f'\?")


def test_too_deep_network_says_why() -> None:
    assert_fails("train", "lenet_9c1f",
          match=r"9 conv layers of 5x5 \(padding 0\) shrink a 28x28 tile to nothing")


@pytest.mark.parametrize(("batch", "match"), [
    ("abc", r"--batch takes comma-separated integers like 1,16,256, got 'abc'"),
    ("0,4", r"--batch values must be positive integers, got '0,4'"),
])
def test_bad_batch(trained: Trained, batch: str, match: str) -> None:
    assert_fails("bench", trained.onnx, "--batch", batch, "--no-save", match=match)


def test_negative_timing_and_processes(trained: Trained) -> None:
    assert_fails("bench", trained.onnx, "--duration", "-1", "--no-save", match="must not be negative")
    assert_fails("bench", trained.onnx, "--processes", "-1", "--no-save",
          match=r"--processes must be within 0\.\.100, got -1")


def test_batch_too_large_for_memory_keeps_earlier_records(
        trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnn_deploy.device

    monkeypatch.setattr(cnn_deploy.device, "available_memory_bytes", lambda: 50 * 2**20)
    results = tmp_path / "mem.jsonl"
    assert_fails("bench", trained.onnx, "--backend", "onnxruntime,torch", "--batch", "1,100000", *FAST,
          "--processes", "0", "--results", results,
          match=r"batch 100000 needs about .* is available: use --batch \d+ or less")
    read = read_results(results)
    assert read.skipped == []
    assert [(r["backend"]["label"], r["batch"]) for r in read.records] == [(BASELINE, 1)]


def test_results_file_cut_by_a_crash(trained: Trained, tmp_path: Path) -> None:
    results = tmp_path / "crashed.jsonl"
    old = json.dumps({"schema": 1, "kind": "bench", "run_id": "old", "batch": 1})
    half = '{"schema": 1, "kind": "bench", "run_id": "cut", "sam'
    results.write_text(old + "\n" + half)
    cli("bench", trained.onnx, "--backend", "onnxruntime", "--batch", "1,4", *FAST,
        "--processes", "0", "--results", results)
    lines = results.read_text().split("\n")
    assert lines[:2] == [old, half]  # nothing already written was rewritten
    assert lines[-1] == "" and all(json.loads(line) for line in lines[2:-1])
    read = read_results(results)
    assert len(read.skipped) == 1 and f"{results}:2:" in read.skipped[0]
    assert read.records[0]["run_id"] == "old"
    assert len(read.records) == 1 + 4  # baseline and onnxruntime at batches 1 and 4


def test_results_file_that_cannot_be_written(trained: Trained, tmp_path: Path) -> None:
    folder = tmp_path / "a_folder.jsonl"
    folder.mkdir()
    assert_fails("bench", trained.onnx, "--backend", "onnxruntime", "--batch", "1", *FAST,
          "--processes", "0", "--results", folder,
          match=rf"cannot append to {re.escape(str(folder))} \(Is a directory\): it is a folder: "
                r"give a \.jsonl file path for --results")


# -- data download -------------------------------------------------------------
@pytest.fixture
def empty_mirror(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server that answers 404 for every MNIST file."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_data_download_from_a_mirror_without_the_files(empty_mirror: str, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    assert_fails("data", "download", "--mirror", empty_mirror, "--dest", dest,
          match=rf"could not download {re.escape(empty_mirror)}train-images-idx3-ubyte\.gz: "
                r"HTTP 404 .*pass --mirror URL")
    assert list(dest.iterdir()) == []  # no partial file left behind


# -- imports stay light --------------------------------------------------------------
BLOCKER = """
import importlib.abc
import sys

BLOCKED = {"tensorrt", "cuda", "pycuda"}


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, _Block())
"""

IMPORT_CHECK = """
import importlib
import pkgutil
import sys

import cnn_deploy.cli

heavy = sorted(m for m in ("torch", "onnxruntime", "onnx") if m in sys.modules)
print("HEAVY", ",".join(heavy))

import cnn_deploy

names = [m.name for m in pkgutil.walk_packages(cnn_deploy.__path__, "cnn_deploy.")]
for name in names:
    importlib.import_module(name)
print("IMPORTED", len(names))
"""


def test_imports_are_lazy_and_gpu_packages_optional(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    probe = subprocess.run([sys.executable, "-c", "import tensorrt"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert "blocked by the test" in probe.stderr  # the blocker is in force

    checked = subprocess.run([sys.executable, "-c", IMPORT_CHECK], env=env, capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr
    assert "HEAVY \n" in checked.stdout, checked.stdout  # none of them after `import cnn_deploy.cli`
    import cnn_deploy

    modules = list(pkgutil.walk_packages(cnn_deploy.__path__, "cnn_deploy."))
    assert int(checked.stdout.split("IMPORTED ")[1]) == len(modules) > 10

    script = Path(sys.executable).with_name("cnndeploy")
    command = [str(script)] if script.is_file() else [
        sys.executable, "-c", "from cnn_deploy.cli import main; main()"]
    helped = subprocess.run([*command, "--help"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "Usage:" in helped.stdout and "bench" in helped.stdout
    assert "Traceback" not in helped.stderr


# -- quickstart --------------------------------------------------------------------
def test_quickstart_dry_run_trains_exports_and_prints_one_table(mnist_dir: Path,
                                                                 tmp_path: Path) -> None:
    result = cli("quickstart", "--dry-run", "--batch", "1,16", "--models", tmp_path / "m",
                 "--results", tmp_path / "r.jsonl")
    assert (tmp_path / "m" / "lenet_1c1f.pt").is_file()
    assert (tmp_path / "m" / "lenet_1c1f.onnx").is_file()
    assert "test accuracy" in result.stdout and "top-1 agreement 100.00%" in result.stdout
    rows = table_rows(result.stdout)
    labels = {r[0] for r in rows}
    assert {BASELINE, CHANNELS_LAST} <= labels
    assert any(label.startswith("onnxruntime") for label in labels)
    assert {r[1] for r in rows} == {"1", "16"}
    assert all(r[-1].endswith("%") for r in rows)  # the test accuracy column
    records = read_results(tmp_path / "r.jsonl").records
    assert len(records) == len(labels) * 2  # every usable CPU backend, both batches
    assert all(r["model"]["trained"] for r in records)


# -- export --spec -----------------------------------------------------------------
def test_export_spec_writes_an_untrained_network_checked_against_pytorch(tmp_path: Path) -> None:
    from cnn_deploy.onnxfile import read_metadata

    out = tmp_path / "m" / "lenet_1c0f.onnx"
    result = cli("export", "--spec", "lenet_1c0f", "--out", out, "--parity-tiles", "100")
    meta = read_metadata(out)
    assert meta["spec"] == "lenet_1c0f" and meta["trained"] == "false" and "checkpoint" not in meta
    assert "parity fp32 vs PyTorch on 100 test digits" in result.stdout
    assert "top-1 agreement 100.00%" in result.stdout
    assert "untrained weights" in result.stderr


def test_export_needs_exactly_one_of_a_checkpoint_and_a_spec(trained: Trained) -> None:
    assert_fails("export", "--parity-tiles", "0", match=r"give a checkpoint \(.pt\) or --spec NAME")
    assert_fails("export", trained.checkpoint, "--spec", "lenet_1c0f", "--parity-tiles", "0",
                 match=r"or --spec NAME, not both")
    assert_fails("export", "--spec", "lenet_9c1f", "--parity-tiles", "0",
                 match=r"not a network name|conv layers")


# -- outputs that would lose data are refused before any work ------------------------
def test_outputs_that_would_overwrite_inputs_or_other_files_are_refused(trained: Trained,
                                                                       tmp_path: Path) -> None:
    checkpoint = tmp_path / "lenet_1c1f.pt"
    checkpoint.write_bytes(trained.checkpoint.read_bytes())
    before = checkpoint.read_bytes()
    assert_fails("export", checkpoint, "--out", checkpoint, "--parity-tiles", "0",
                 match=r"--out .*lenet_1c1f\.pt should end in \.onnx")
    assert_fails("export", checkpoint, "--out", tmp_path, "--parity-tiles", "0",
                 match=r"should end in \.onnx|is a folder")
    results = tmp_path / "results.jsonl"
    results.write_text('{"schema": 1, "kind": "bench"}\n')
    assert_fails("train", "lenet_1c1f", "--epochs", "1", "--out", results,
                 match=r"--out .*results\.jsonl should end in \.pt")
    assert_fails("train", "lenet_1c1f", "--epochs", "1", "--subset", "0",
                 match=r"--subset takes at least 100 training digits, got 0")
    assert checkpoint.read_bytes() == before and results.read_text().count("\n") == 1


def test_merge_never_replaces_a_file_it_was_not_given(tmp_path: Path) -> None:
    a, other = tmp_path / "a.jsonl", tmp_path / "other.jsonl"
    a.write_text('{"schema": 1, "kind": "bench", "n": 1}\n')
    other.write_text('{"schema": 1, "kind": "bench", "n": 2}\n{"schema": 1, "kind": "bench", "n": 3}\n')
    assert_fails("results", "merge", a, "-o", other, match=r"other\.jsonl exists and is not one of "
                                                             r"the files merged.*--force")
    assert other.read_text().count("\n") == 2
    cli("results", "merge", a, other, "-o", other)  # into one of its inputs: kept, merged
    assert other.read_text().count("\n") == 3
    cli("results", "merge", a, "-o", other, "--force")
    assert other.read_text().count("\n") == 1


def test_report_and_profile_outputs_are_checked_before_any_work(tmp_path: Path) -> None:
    records = tmp_path / "r.jsonl"
    records.write_text('{"schema": 1, "kind": "bench"}\n')
    assert_fails("report", records, "-o", records, match=r"-o .*r\.jsonl is a file: the report is "
                                                          r"a folder")
    assert records.read_text().count("\n") == 1
    assert_fails("profile", "--spec", "lenet_1c1f,lenet_2c1f", "--png", tmp_path / "chart.jsonl",
                 "--no-save", match=r"--png .*chart\.jsonl should end in \.png")


def test_report_and_compare_refuse_files_without_records(tmp_path: Path) -> None:
    empty, binary = tmp_path / "empty.jsonl", tmp_path / "model.onnx"
    empty.write_text("")
    binary.write_bytes(bytes(range(256)) * 40)
    assert_fails("report", empty, "-o", tmp_path / "rep", match=r"empty\.jsonl holds no "
                                                                 r"cnn_deploy records \(it is empty\)")
    assert not (tmp_path / "rep").exists()
    assert_fails("compare", binary, empty, match=r"model\.onnx holds no cnn_deploy records "
                                                 r"\(\d+ lines skipped")


CLOSED_PIPE = """
import os, sys
if sys.argv[1] == "closed":  # standard output a pipe whose reader has gone, as after `| head`
    read, write = os.pipe()
    os.close(read)
    os.dup2(write, 1)
from cnn_deploy.cli import main, render
def closed(*args, **kwargs):
    raise BrokenPipeError(32, "Broken pipe")
render.out.print = closed
sys.argv = ["cnndeploy", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("args", [["backends"], ["data", "info"]])
def test_a_closed_pipe_is_no_traceback(args: list[str]) -> None:
    """`cnndeploy ... | head`: the reader has gone away when a command prints its table; it
    stops without a traceback or an "internal error" line. A broken pipe elsewhere, with
    standard output fine, is a bug and says so."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CLOSED_PIPE, "closed", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    other = subprocess.run([sys.executable, "-c", CLOSED_PIPE, "open", *args],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 1 and "internal error: an unexpected BrokenPipeError" in other.stderr
