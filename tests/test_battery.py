"""The hostile-input battery (issue 13): every command, fed what a careless or unlucky user
would give it, ends as promised: exit 1 (2 for a command-line usage error), exactly one
`error:` line that names the fix, no traceback, and every file that was there before
(earlier results above all) byte-for-byte intact.

One table, grouped by command. Each case names its argv (run in a fresh folder holding
``results/bench.jsonl`` and ``results/sweep.jsonl`` with real records), the files it needs
there first, the exit code and a pattern for the error line. ``python tests/test_battery.py``
prints the table for the current code, each case in a fresh process (slower; for reports).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FAST = ("--duration", "0.01", "--warmup", "0", "--iterations", "2", "--processes", "0")
SPEC = ("--spec", "lenet_1c1f")


def _has_trt_builder() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return False
    import tensorrt

    return hasattr(tensorrt, "Builder")


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    match: str  # the `error:` line must match this (it names the fix)
    code: int = 1
    files: tuple[str, ...] = ()  # made in the folder first, by MAKERS
    env: dict[str, str] = field(default_factory=dict)


def C(id: str, *argv: str, match: str, code: int = 1, files: tuple[str, ...] = (),
      env: dict[str, str] | None = None) -> Case:
    return Case(id, tuple(argv), match, code, files, env or {})


# -- the files a case may need ------------------------------------------------------
@dataclass
class Fixtures:
    checkpoint: Path  # a trained lenet_1c1f.pt
    onnx: Path  # its export
    other_onnx: Path  # lenet_2c1f.onnx (another network)
    records: bytes  # a real results file: bench records


def _copy(src_attr: str, name: str) -> Callable[[Path, Fixtures], None]:
    def make(folder: Path, fx: Fixtures) -> None:
        shutil.copyfile(getattr(fx, src_attr), folder / name)
    return make


def _write(name: str, data: bytes | str) -> Callable[[Path, Fixtures], None]:
    def make(folder: Path, fx: Fixtures) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return make


def _onnx(name: str, build: Callable[[], Any]) -> Callable[[Path, Fixtures], None]:
    def make(folder: Path, fx: Fixtures) -> None:
        import onnx

        onnx.save(build(), str(folder / name))
    return make


def _graph(shape: list[Any], out_shape: list[Any] | None, opset: int = 17) -> Any:
    from onnx import TensorProto, helper

    outputs = [] if out_shape is None else [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    nodes = [helper.make_node("Flatten", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _external(folder: Path, fx: Fixtures) -> None:
    """An ONNX file whose weights live in a file that is not there."""
    import onnx

    model = onnx.load(str(fx.onnx))
    onnx.save(model, str(folder / "ext.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.weights", size_threshold=0)
    (folder / "ext.weights").unlink()


def _bad_meta(folder: Path, fx: Fixtures) -> None:
    import onnx

    model = onnx.load(str(fx.onnx))
    for p in model.metadata_props:
        if p.key == "cnn_deploy.spec_json":
            p.value = json.dumps({"name": "x", "conv_layers": 99, "fc_layers": "one"})
        if p.key == "cnn_deploy.spec":
            p.value = "lenet_99c1f"
    onnx.save(model, str(folder / "badmeta.onnx"))


def _checkpoint(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path, Fixtures], None]:
    def make(folder: Path, fx: Fixtures) -> None:
        import torch

        ck = torch.load(fx.checkpoint, map_location="cpu", weights_only=True)
        change(ck)
        torch.save(ck, folder / name)
    return make


def _no_spec(ck: dict[str, Any]) -> None:
    del ck["spec"]


def _str_spec(ck: dict[str, Any]) -> None:
    ck["spec"] = {**ck["spec"], "depth": "twenty"}


def _line(**changes: Any) -> Callable[[Path, Fixtures], None]:
    """A results file of real records plus one record with ``changes`` (None: key removed)."""
    def make(folder: Path, fx: Fixtures) -> None:
        first = json.loads(fx.records.splitlines()[0])
        for k, v in changes.items():
            if v is None and k != "schema":
                first.pop(k, None)
            else:
                first[k] = v
        name = "odd.jsonl"
        (folder / name).write_bytes(fx.records + (json.dumps(first) + "\n").encode())
    return make


def _cut(folder: Path, fx: Fixtures) -> None:
    (folder / "results" / "cut.jsonl").write_bytes(fx.records + fx.records.splitlines()[0][:50])


def _file_parent(folder: Path, fx: Fixtures) -> None:
    (folder / "afile").write_text("not a folder\n")


def _synthetic(name: str, **kw: Any) -> Callable[[Path, Fixtures], None]:
    """Sweep records of a synthetic device whose cost is known (tests/test_perfmodel.py)."""
    def make(folder: Path, fx: Fixtures) -> None:
        from test_perfmodel import sweep_records

        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in sweep_records(**kw)))
    return make


def _latency_model(folder: Path, fx: Fixtures) -> None:
    """A latency model of the synthetic device (not this machine)."""
    from test_perfmodel import sweep_records

    from cnn_deploy.results.tidy import tidy
    from cnn_deploy.study import modelfiles, perfmodel

    rows = tidy(sweep_records(passes=1))
    source = perfmodel.choose_source(rows)
    modelfiles.save(perfmodel.fit(perfmodel.points(rows, source), source), folder / "latency.json")


def _edited_model(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Fixtures], None]:
    """The synthetic latency model, hand-edited by ``edit`` (written with NaN/Infinity allowed,
    as a careless editor or another tool would)."""
    def make(folder: Path, fx: Fixtures) -> None:
        _latency_model(folder, fx)
        data = json.loads((folder / "latency.json").read_text())
        edit(data)
        (folder / "latency.json").unlink()
        (folder / name).write_text(json.dumps(data))
    return make


MAKERS: dict[str, Callable[[Path, Fixtures], None]] = {
    "inf_interval.json": _edited_model("inf_interval.json",
                                       lambda d: d["interval"].update(additive=float("inf"))),
    "nan_coef.json": _edited_model("nan_coef.json",
                                   lambda d: d["coef"]["additive"].__setitem__(0, float("nan"))),
    "reversed_range.json": _edited_model("reversed_range.json",
                                         lambda d: d["ranges"].update(batch=[4096, 16])),
    "odd_range.json": _edited_model("odd_range.json", lambda d: d["ranges"].update(colour=[1, 2])),
    "nested.json": _write("nested.json", "[" * 100_000),
    "synth.jsonl": _synthetic("synth.jsonl", passes=1),
    "mixed.jsonl": _synthetic("mixed.jsonl", passes=1, backend="openvino", label="openvino x"),
    "latency.json": _latency_model,
    "old_model.json": _write("old_model.json", '{"schema": "cnn_deploy.latency_model/0"}'),
    "junk.json": _write("junk.json", "{not json"),
    "ck": _copy("checkpoint", "lenet_1c1f.pt"),
    "onnx": _copy("onnx", "lenet_1c1f.onnx"),
    "other": _copy("other_onnx", "lenet_2c1f.onnx"),
    "empty.onnx": _write("empty.onnx", b""),
    "junk.onnx": _write("junk.onnx", bytes(range(256)) * 16),
    "empty.pt": _write("empty.pt", b""),
    "nhwc.onnx": _onnx("nhwc.onnx", lambda: _graph(["N", 28, 28, 1], ["N", 784])),
    "nhwc3.onnx": _onnx("nhwc3.onnx", lambda: _graph(["N", 32, 32, 3], ["N", 3072])),
    "noout.onnx": _onnx("noout.onnx", lambda: _graph(["N", 1, 28, 28], None)),
    "opset99.onnx": _onnx("opset99.onnx", lambda: _graph(["N", 1, 28, 28], ["N", 784], 99)),
    "ext.onnx": _external,
    "badmeta.onnx": _bad_meta,
    "nospec.pt": _checkpoint("nospec.pt", _no_spec),
    "strspec.pt": _checkpoint("strspec.pt", _str_spec),
    "dir.onnx": lambda folder, fx: (folder / "dir.onnx").mkdir(),
    "dir.pt": lambda folder, fx: (folder / "dir.pt").mkdir(),
    "dir.png": lambda folder, fx: (folder / "dir.png").mkdir(),
    "dir.json": lambda folder, fx: (folder / "dir.json").mkdir(),
    "dir.jsonl": lambda folder, fx: (folder / "dir.jsonl").mkdir(),
    "afile": _file_parent,
    "schema_str": _line(schema="1"),
    "schema_null": _line(schema=None),
    "schema_new": _line(schema=99),
    "no_stats": _line(stats=None),
    "stats_str": _line(stats="fast"),
    "cut.jsonl": _cut,
    "report.html": _write("report.html", "<html>an earlier report</html>\n"),
    "notes.txt": _write("notes.txt", "my notes\n"),
    "garbage_mnist": _write("garbage/train-images-idx3-ubyte", b"\x00\x00\x08\x03" + b"\xff" * 12),
}

RESULTS = "results/bench.jsonl"
SWEEP = "results/sweep.jsonl"

CASES: list[tuple[str, list[Case]]] = [
    ("train", [
        C("subset-0", "train", "lenet_1c1f", "--subset", "0", match=r"--subset .*at least 100"),
        C("subset-negative", "train", "lenet_1c1f", "--subset", "-5", match=r"--subset"),
        C("epochs-0", "train", "lenet_1c1f", "--epochs", "0", match=r"--epochs"),
        C("epochs-text", "train", "lenet_1c1f", "--epochs", "abc", code=2, match=r"--epochs"),
        C("lr-0", "train", "lenet_1c1f", "--lr", "0", match=r"--lr"),
        C("lr-nan", "train", "lenet_1c1f", "--lr", "nan", match=r"--lr"),
        C("momentum-negative", "train", "lenet_1c1f", "--momentum", "-1", match=r"--momentum"),
        C("batch-size-0", "train", "lenet_1c1f", "--batch-size", "0", match=r"--batch-size"),
        C("patience-negative", "train", "lenet_1c1f", "--patience", "-1", match=r"--patience"),
        C("bad-name", "train", "lenet3c1f", match=r"not a network name.*lenet_3c1f"),
        C("depth-1e12", "train", "lenet_1c1f_d1000000000000", match=r"parameters.*smaller"),
        C("layers-1e9", "train", "lenet_1000000000c1f_k1", match=r"conv layers|at most"),
        C("fc-1e12", "train", "lenet_1c1000000000000f_n1", match=r"FC layers|at most"),
        C("digits-5000", "train", "lenet_" + "9" * 5000 + "c1f", match=r"not a network name|at most"),
        C("out-folder", "train", "lenet_1c1f", "--out", "dir.pt", files=("dir.pt",),
          match=r"is a folder"),
        C("out-under-file", "train", "lenet_1c1f", "--out", "afile/x.pt", files=("afile",),
          match=r"cannot write|not a folder"),
        C("out-wrong-suffix", "train", "lenet_1c1f", "--out", RESULTS, match=r"should end in \.pt"),
        C("data-missing", "train", "lenet_1c1f", "--data", "/nonexistent", match=r"--data"),
        C("data-garbage", "train", "lenet_1c1f", "--data", "garbage", files=("garbage_mnist",),
          match=r"garbage"),
        C("env-garbage", "train", "lenet_1c1f", env={"CNNDEPLOY_DATA": "/nonexistent"},
          match=r"CNNDEPLOY_DATA"),
    ]),
    ("export", [
        *(C(f"opset-{v}", "export", "lenet_1c1f.pt", "--opset", v, "--parity-tiles", "0",
            files=("ck",), match=r"--opset") for v in ("3", "5", "99", "999", "-1")),
        C("parity-negative", "export", "lenet_1c1f.pt", "--parity-tiles", "-5", files=("ck",),
          match=r"--parity-tiles"),
        C("out-folder", "export", "lenet_1c1f.pt", "--out", "dir.onnx", "--parity-tiles", "0",
          files=("ck", "dir.onnx"), match=r"is a folder"),
        C("out-under-file", "export", "lenet_1c1f.pt", "--out", "afile/x.onnx", "--parity-tiles",
          "0", files=("ck", "afile"), match=r"cannot write|not a folder"),
        C("out-is-input", "export", "lenet_1c1f.pt", "--out", "lenet_1c1f.pt", files=("ck",),
          match=r"should end in \.onnx"),
        C("missing-checkpoint", "export", "nothere.pt", match=r"no checkpoint.*cnndeploy train"),
        C("empty-checkpoint", "export", "empty.pt", files=("empty.pt",),
          match=r"not a readable.*retrain"),
        C("checkpoint-no-spec", "export", "nospec.pt", "--parity-tiles", "0",
          files=("nospec.pt",), match=r"spec"),
        C("checkpoint-text-spec", "export", "strspec.pt", "--parity-tiles", "0",
          files=("strspec.pt",), match=r"spec"),
        C("onnx-as-checkpoint", "export", "lenet_1c1f.onnx", files=("onnx",),
          match=r"checkpoint|\.pt"),
        C("spec-and-checkpoint", "export", "lenet_1c1f.pt", *SPEC, files=("ck",),
          match=r"not both"),
        C("neither", "export", match=r"checkpoint .*--spec"),
        C("spec-bad", "export", "--spec", "lenet_0c1f", match=r"conv_layers"),
        C("spec-huge", "export", "--spec", "lenet_1c1f_d1000000000000", match=r"parameters"),
        C("data-missing", "export", "lenet_1c1f.pt", "--data", "/nonexistent", files=("ck",),
          match=r"--data.*--parity-tiles 0"),
    ]),
    ("bench", [
        C("nhwc", "bench", "nhwc.onnx", "--no-save", *FAST, files=("nhwc.onnx",),
          match=r"channels-last|NHWC"),
        C("nhwc-rgb", "bench", "nhwc3.onnx", "--no-save", *FAST, files=("nhwc3.onnx",),
          match=r"channels-last|NHWC"),
        C("data-missing", "bench", "lenet_1c1f.onnx", "--data", "/nonexistent", *FAST,
          files=("onnx",), match=r"--data"),
        C("env-garbage", "bench", "lenet_1c1f.onnx", *FAST, files=("onnx",),
          env={"CNNDEPLOY_DATA": "/nonexistent"}, match=r"CNNDEPLOY_DATA"),
        C("option-unknown", "bench", *SPEC, "-o", "onnxruntime.bogus=1", *FAST,
          match=r"bogus"),
        C("option-threads-negative", "bench", *SPEC, "-o", "onnxruntime.threads=-3", *FAST,
          match=r"threads"),
        C("option-threads-text", "bench", *SPEC, "-o", "torch.threads=abc", *FAST,
          match=r"threads.*integer"),
        C("option-no-equals", "bench", *SPEC, "-o", "torch.threads", *FAST,
          match=r"BACKEND\.KEY=VALUE"),
        C("option-other-backend", "bench", *SPEC, "-b", "onnxruntime", "-o",
          "openvino.hint=latency", *FAST, match=r"--backend"),
        C("processes-huge", "bench", *SPEC, "--processes", "100000", match=r"--processes"),
        C("processes-negative", "bench", *SPEC, "--processes", "-1", match=r"--processes"),
        C("processes-text", "bench", *SPEC, "--processes", "abc", code=2, match=r"--processes"),
        C("batch-text", "bench", *SPEC, "--batch", "abc", match=r"--batch"),
        C("batch-0", "bench", *SPEC, "--batch", "0", match=r"--batch"),
        C("batch-huge", "bench", *SPEC, "--batch", "100000000", *FAST, match=r"batch"),
        C("duration-nan", "bench", *SPEC, "--duration", "nan", match=r"--duration"),
        C("duration-negative", "bench", *SPEC, "--duration", "-1", match=r"--duration"),
        C("iterations-negative", "bench", *SPEC, "--iterations", "-3", match=r"--iterations"),
        C("empty-onnx", "bench", "empty.onnx", *FAST, files=("empty.onnx",),
          match=r"is empty"),
        C("junk-onnx", "bench", "junk.onnx", *FAST, files=("junk.onnx",),
          match=r"not a readable ONNX"),
        C("onnx-folder", "bench", "dir.onnx", *FAST, files=("dir.onnx",),
          match=r"folder|no ONNX file"),
        C("no-outputs", "bench", "noout.onnx", *FAST, files=("noout.onnx",), match=r"output"),
        C("no-outputs-worker", "bench", "noout.onnx", "--duration", "0.01", "--processes", "1",
          files=("noout.onnx",), match=r"output"),
        C("external-data-missing", "bench", "ext.onnx", *FAST, files=("ext.onnx",),
          match=r"ext\.weights|external"),
        C("external-data-worker", "bench", "ext.onnx", "--duration", "0.01", "--processes", "1",
          files=("ext.onnx",), match=r"ext\.weights|external"),
        C("opset-99", "bench", "opset99.onnx", *FAST, files=("opset99.onnx",), match=r"opset"),
        C("bad-metadata", "bench", "badmeta.onnx", *FAST, files=("badmeta.onnx",),
          match=r"metadata|spec"),
        C("checkpoint-no-spec", "bench", "nospec.pt", *FAST, files=("nospec.pt",), match=r"spec"),
        C("checkpoint-text-spec", "bench", "strspec.pt", *FAST, files=("strspec.pt",),
          match=r"spec"),
        C("spec-huge", "bench", "--spec", "lenet_1c1f_d1000000000000", *FAST,
          match=r"parameters"),
        C("missing-model", "bench", "nothere.onnx", match=r"no ONNX file"),
        C("wrong-suffix", "bench", "notes.txt", files=("notes.txt",), match=r"\.onnx or \.pt"),
        C("model-and-spec", "bench", "lenet_1c1f.onnx", *SPEC, files=("onnx",),
          match=r"not both"),
        C("unknown-backend", "bench", *SPEC, "-b", "onnxruntim", match=r"onnxruntime"),
        C("results-folder", "bench", *SPEC, *FAST, "--results", "dir.jsonl",
          files=("dir.jsonl",), match=r"--results"),
        C("results-under-file", "bench", *SPEC, *FAST, "--results", "afile/r.jsonl",
          files=("afile",), match=r"--results"),
        C("results-is-model", "bench", "lenet_1c1f.onnx", *FAST, "--results", "lenet_1c1f.onnx",
          files=("onnx",), match=r"not a JSON-lines"),
        C("results-disk-full", "bench", *SPEC, *FAST, "--results", "/dev/full",
          match=r"--results"),
        C("engine-no-gpu", "bench", "--engine", "x.plan", match=r"GPU|no engine"),
    ]),
    ("build", [
        C("no-gpu", "build", "lenet_1c1f.onnx", files=("onnx",), match=r"TensorRT|GPU"),
        C("missing", "build", "nothere.onnx", match=r"nothere|TensorRT|GPU"),
        C("batches-upside-down", "build", "lenet_1c1f.onnx", "--min-batch", "8", "--max-batch",
          "2", files=("onnx",), match=r"batch|TensorRT|GPU"),
    ]),
    ("profile", [
        C("batch-huge", "profile", *SPEC, "--batch", "10000000", "--no-save",
          match=r"batch|memory"),
        C("batch-0", "profile", *SPEC, "--batch", "0", "--no-save", match=r"--batch"),
        C("batch-text", "profile", *SPEC, "--batch", "abc", code=2, match=r"--batch"),
        C("runs-0", "profile", *SPEC, "--runs", "0", "--no-save", match=r"--runs"),
        C("png-folder", "profile", "--spec", "lenet_1c1f,lenet_2c1f", "--png", "dir.png",
          files=("dir.png",), match=r"is a folder"),
        C("png-under-file", "profile", "--spec", "lenet_1c1f,lenet_2c1f", "--png",
          "afile/c.png", files=("afile",), match=r"--png|cannot write"),
        C("png-suffix", "profile", "--spec", "lenet_1c1f,lenet_2c1f", "--png", RESULTS,
          match=r"should end in \.png"),
        C("results-folder", "profile", *SPEC, "--results", "dir.jsonl", files=("dir.jsonl",),
          match=r"--results"),
        C("bad-backend", "profile", *SPEC, "-b", "tensorrt", match=r"tensorrt|engine|GPU"),
        C("bad-family", "profile", "--spec", "lenet_{1..99}c1f", match=r"conv|lenet"),
        C("option-unknown", "profile", *SPEC, "-o", "onnxruntime.bogus=1", match=r"bogus"),
    ]),
    ("sweep", [
        C("grid-huge-dry", "sweep", "--grid", "fc_layers=1..10000", "--dry-run",
          match=r"cells|at most"),
        C("grid-range-1e12", "sweep", "--grid", "batch=1..1000000000000", "--dry-run",
          match=r"cells|at most|values"),
        C("grid-bad-field", "sweep", "--grid", "layers=1..3", "--dry-run", match=r"unknown field"),
        C("grid-bad-values", "sweep", "--grid", "fc_layers=a..b", "--dry-run", match=r"cannot read"),
        C("grid-empty", "sweep", "--grid", ";", "--dry-run", match=r"empty"),
        C("grid-depth-huge", "sweep", "--grid", "depth=1000000000000", "--dry-run",
          match=r"parameters"),
        C("grid-batch-0", "sweep", "--grid", "fc_layers=1;batch=0", "--dry-run",
          match=r"batch"),
        C("group-9", "sweep", "--group", "9", "--dry-run", match=r"--group"),
        C("group-and-grid", "sweep", "--group", "1", "--grid", "fc_layers=1", "--dry-run",
          match=r"not both"),
        C("shard-bad", "sweep", "--group", "1", "--shard", "3/2", "--dry-run", match=r"--shard"),
        C("passes-0", "sweep", "--group", "1", "--passes", "0", "--dry-run", match=r"--passes"),
        C("duration-nan", "sweep", "--group", "1", "--duration", "nan", "--dry-run",
          match=r"--duration"),
        C("processes-0", "sweep", "--group", "1", "--processes", "0", "--dry-run",
          match=r"--processes"),
        C("processes-huge", "sweep", "--group", "1", "--processes", "100000", "--dry-run",
          match=r"--processes"),
        C("budget-negative", "sweep", "--group", "1", "--budget", "-1", match=r"--budget"),
        C("method-bad", "sweep", "--group", "1", "--method", "fast", "--dry-run",
          match=r"--method"),
        C("train-epochs-0", "sweep", "--group", "1", "--train-epochs", "0", match=r"--train-epochs"),
        C("backend-two", "sweep", "--group", "1", "-b", "onnxruntime,torch", "--dry-run",
          match=r"one backend"),
        C("precision-fp16-cpu", "sweep", "--group", "1", "--precision", "fp16", "--dry-run",
          match=r"--precision"),
        C("tensorrt-no-gpu", "sweep", "--group", "1", "-b", "tensorrt", match=r"GPU"),
        C("option-other", "sweep", "--group", "1", "-o", "torch.threads=1", "--dry-run",
          match=r"options given for torch"),
        C("results-folder", "sweep", "--grid", "fc_layers=1;batch=1", "--results", "dir.jsonl",
          files=("dir.jsonl",), match=r"--results|folder"),
        C("results-is-model", "sweep", "--grid", "fc_layers=1;batch=1", "--results",
          "lenet_1c1f.onnx", files=("onnx",), match=r"not a JSON-lines"),
        C("results-disk-full", "sweep", "--grid", "fc_layers=1;batch=1", "--results", "/dev/full",
          "--duration", "0.01", match=r"--results|disk|space"),
    ]),
    ("results merge", [
        C("out-existing", "results", "merge", RESULTS, "-o", SWEEP, match=r"--force"),
        C("out-folder", "results", "merge", RESULTS, "-o", "dir.jsonl", files=("dir.jsonl",),
          match=r"folder"),
        C("missing-input", "results", "merge", "nothere.jsonl", "-o", "m.jsonl",
          match=r"nothere"),
        C("schema-newer", "results", "merge", "odd.jsonl", RESULTS, "-o", "m.jsonl",
          files=("schema_new",), match=r"upgrade"),
        C("no-out", "results", "merge", RESULTS, code=2, match=r"--out|-o"),
        C("model-input", "results", "merge", "lenet_1c1f.onnx", "-o", "m.jsonl",
          files=("onnx",), match=r"no cnn_deploy records|not a"),
        C("out-under-file", "results", "merge", RESULTS, "-o", "afile/m.jsonl", files=("afile",),
          match=r"cannot write|-o"),
    ]),
    ("report", [
        C("out-existing-file", "report", RESULTS, "-o", "report.html", files=("report.html",),
          match=r"is a file"),
        C("out-is-results", "report", RESULTS, "-o", RESULTS, match=r"is a file"),
        C("out-under-file", "report", RESULTS, "-o", "afile/rep", files=("afile",),
          match=r"cannot write|-o"),
        C("missing", "report", "nothere.jsonl", "-o", "rep", match=r"nothere"),
        C("model-input", "report", "lenet_1c1f.onnx", "-o", "rep", files=("onnx",),
          match=r"no cnn_deploy records"),
        C("no-args", "report", code=2, match=r"RESULTS|argument"),
    ]),
    ("compare", [
        C("missing", "compare", RESULTS, "nothere.jsonl", match=r"nothere"),
        C("model-input", "compare", "lenet_1c1f.onnx", RESULTS, files=("onnx",),
          match=r"no cnn_deploy records"),
        C("one-file", "compare", RESULTS, code=2, match=r"argument|B"),
    ]),
    ("data", [
        C("info-missing", "data", "info", "--data", "/nonexistent", match=r"--data"),
        C("info-garbage", "data", "info", "--data", "garbage", files=("garbage_mnist",),
          match=r"garbage"),
        C("info-env-garbage", "data", "info", env={"CNNDEPLOY_DATA": "/nonexistent"},
          match=r"CNNDEPLOY_DATA"),
        C("video-frames-0", "data", "video", "v.mkv", "--frames", "0", match=r"--frames"),
        C("video-size-bad", "data", "video", "v.mkv", "--size", "big", match=r"--size"),
        C("video-over-results", "data", "video", RESULTS, match=r"\.mkv|\.mp4|suffix|--out|video"),
        C("download-dest-file", "data", "download", "--dest", "notes.txt", files=("notes.txt",),
          match=r"notes\.txt"),
        C("unknown-sub", "data", "fetch", code=2, match=r"fetch|command"),
    ]),
    ("quickstart", [
        C("epochs-0", "quickstart", "--epochs", "0", match=r"--epochs"),
        C("dry-epochs-0", "quickstart", "--dry-run", "--epochs", "0", match=r"--epochs"),
        C("processes-negative", "quickstart", "--processes", "-1", match=r"--processes"),
        C("dry-processes-negative", "quickstart", "--dry-run", "--processes", "-1",
          match=r"--processes"),
        C("processes-huge", "quickstart", "--processes", "100000", match=r"--processes"),
        C("batch-text", "quickstart", "--batch", "x", match=r"--batch"),
        C("models-file", "quickstart", "--models", "notes.txt", files=("notes.txt",),
          match=r"--models"),
        C("results-folder", "quickstart", "--results", "dir.jsonl", files=("dir.jsonl",),
          match=r"--results"),
        C("results-is-model", "quickstart", "--results", "lenet_1c1f.onnx", files=("onnx",),
          match=r"not a JSON-lines"),
        C("data-missing", "quickstart", "--data", "/nonexistent", match=r"--data"),
        C("duration-negative", "quickstart", "--duration", "-1", match=r"--duration"),
    ]),
    ("stream", [
        C("no-model", "stream", "nothere.mkv", match=r"--model"),
        C("missing-source", "stream", "nothere.mkv", "--model", "lenet_1c1f.onnx",
          files=("onnx",), match=r"nothere"),
        C("empty-model", "stream", "nothere.mkv", "--model", "empty.onnx",
          files=("empty.onnx",), match=r"empty|nothere"),
        C("option-unknown", "stream", "x.mkv", "--model", "lenet_1c1f.onnx", "-o",
          "onnxruntime.bogus=1", files=("onnx",), match=r"bogus"),
        C("batch-text", "stream", "x.mkv", "--model", "m.onnx", "--batch", "abc", code=2,
          match=r"--batch"),
        C("results-is-model", "stream", "x.mkv", "--model", "lenet_1c1f.onnx", "--results",
          "lenet_1c1f.onnx", files=("onnx",), match=r"not a JSON-lines|x\.mkv"),
    ]),
    ("tune", [
        C("processes-0", "tune", *SPEC, "--processes", "0", match=r"--processes"),
        C("batch-0", "tune", *SPEC, "--batch", "0", match=r"--batch"),
        C("duration-0", "tune", *SPEC, "--duration", "0", match=r"--duration"),
        C("backend-bad", "tune", *SPEC, "-b", "tensorflow", match=r"unknown backend"),
        C("out-folder", "tune", *SPEC, "-o", "dir.jsonl", files=("dir.jsonl",),
          match=r"folder|-o|--out"),
        C("spec-bad", "tune", "--spec", "lenet", match=r"not a network name"),
        C("precision-bad", "tune", *SPEC, "--precision", "int8", match=r"--precision.*fp16"),
        *([] if _has_trt_builder() else [  # where one is installed, this tune would run
            C("trt-no-builder", "tune", *SPEC, "-b", "tensorrt", "--processes", "1",
              match=r"cannot tune tensorrt's build.*usable here")]),
        C("engine-missing", "tune", "--engine", "none.plan", match=r"GPU|none\.plan"),
        C("cache-mb-bad", "model", "fit", RESULTS, "--cache-mb", "-5", "-o", "m.json",
          match=r"--cache-mb"),
        C("channel-block-bad", "model", "fit", RESULTS, "--channel-block", "12", "-o", "m.json",
          match=r"--channel-block 12.*1, 4, 8, 16, 32"),
    ]),
    ("model fit", [
        C("missing", "model", "fit", "nothere.jsonl", "-o", "m.json", match=r"nothere"),
        C("folder", "model", "fit", "dir.jsonl", "-o", "m.json", files=("dir.jsonl",),
          match=r"dir\.jsonl"),
        C("onnx-as-records", "model", "fit", "lenet_1c1f.onnx", "-o", "m.json", files=("onnx",),
          match=r"lenet_1c1f\.onnx"),
        C("too-few", "model", "fit", RESULTS, "-o", "m.json", "-b", "onnxruntime",
          match=r"too few to fit .*sweep"),
        C("mixed", "model", "fit", "synth.jsonl", "mixed.jsonl", "-o", "m.json",
          files=("synth.jsonl", "mixed.jsonl"), match=r"mix .*--backend"),
        C("backend-none", "model", "fit", "synth.jsonl", "-o", "m.json", "-b", "torch",
          files=("synth.jsonl",), match=r"no records match"),
        C("out-txt", "model", "fit", "synth.jsonl", "-o", "m.txt", files=("synth.jsonl",),
          match=r"\.json"),
        C("out-folder", "model", "fit", "synth.jsonl", "-o", "dir.json",
          files=("synth.jsonl", "dir.json"), match=r"is a folder"),
        C("out-exists", "model", "fit", "synth.jsonl", "-o", "latency.json",
          files=("synth.jsonl", "latency.json"), match=r"exists.*--force"),
        C("out-results", "model", "fit", "synth.jsonl", "-o", RESULTS, files=("synth.jsonl",),
          match=r"\.json"),
        C("out-is-input-forced", "model", "fit", "latency.json", "-o", "latency.json", "--force",
          files=("latency.json",), match=r"is the input"),
    ]),
    ("model adapt", [
        C("same-source", "model", "adapt", "synth.jsonl", "-m", "latency.json", "-o", "a.json",
          files=("synth.jsonl", "latency.json"), match=r"which the model was fitted on"),
        C("no-out", "model", "adapt", "mixed.jsonl", "-m", "latency.json",
          files=("mixed.jsonl", "latency.json"), code=2, match=r"--out|-o"),
        C("points-50", "model", "adapt", "mixed.jsonl", "-m", "latency.json", "-o", "a.json",
          "--points", "50", files=("mixed.jsonl", "latency.json"), match=r"--points"),
        C("model-missing", "model", "adapt", "mixed.jsonl", "-m", "none.json", "-o", "a.json",
          files=("mixed.jsonl",), match=r"no latency model at none\.json.*model fit"),
        C("model-junk", "model", "adapt", "mixed.jsonl", "-m", "junk.json", "-o", "a.json",
          files=("mixed.jsonl", "junk.json"), match=r"not a readable latency model"),
        C("out-is-source-forced", "model", "adapt", "mixed.jsonl", "-m", "latency.json", "-o",
          "latency.json", "--force", files=("mixed.jsonl", "latency.json"), match=r"is the input"),
    ]),
    ("model validate", [
        C("nets-0", "model", "validate", "-m", "latency.json", "--nets", "0",
          files=("latency.json",), match=r"--nets"),
        C("nets-huge", "model", "validate", "-m", "latency.json", "--nets", "100000",
          files=("latency.json",), match=r"--nets"),
        C("other-device", "model", "validate", "-m", "latency.json", "--nets", "2",
          files=("latency.json",), match=r"speaks for cpu-synthetic-2c.*fit one here"),
        C("png-folder", "model", "validate", "-m", "latency.json", "--png", "dir.png",
          files=("latency.json", "dir.png"), match=r"dir\.png"),
        C("results-onnx", "model", "validate", "-m", "latency.json", "--results",
          "lenet_1c1f.onnx", files=("latency.json", "onnx"), match=r"\.onnx|JSON-lines|speaks"),
        C("no-measure-nothing", "model", "validate", "-m", "latency.json", "--no-measure",
          "--results", "none.jsonl", files=("latency.json",), match=r"no held-out records"),
        C("old-schema", "model", "validate", "-m", "old_model.json", files=("old_model.json",),
          match=r"not a latency model of this version.*model fit"),
        C("results-is-model", "model", "validate", "-m", "latency.json", "--results",
          "latency.json", "--nets", "1", files=("latency.json",), match=r"is the latency model"),
        C("results-other-json", "model", "validate", "-m", "latency.json", "--results",
          "old_model.json", "--nets", "1", files=("latency.json", "old_model.json"),
          match=r"not a JSON-lines|speaks for"),
        C("png-is-results", "model", "validate", "-m", "latency.json", "--results", "h.png",
          "--png", "h.png", files=("latency.json",), match=r"is the input|JSON-lines|speaks for"),
    ]),
    ("predict", [
        C("bad-name", "predict", "lenet3c1f", "-m", "latency.json", files=("latency.json",),
          match=r"not a network name.*lenet_3c1f"),
        C("name-too-long", "predict", "lenet_1c1f", "-m", "a" * 300 + ".json",
          match=r"cannot use a+\.json: File name too long: choose another path"),
        C("name-newline", "predict", "lenet_1c1f\nlenet_2c1f", "-m", "latency.json",
          files=("latency.json",), match=r"'lenet_1c1f\\nlenet_2c1f' is not a network name"),
        C("batch-0", "predict", "lenet_1c1f", "-m", "latency.json", "--batch", "0",
          files=("latency.json",), match=r"--batch"),
        C("batch-text", "predict", "lenet_1c1f", "-m", "latency.json", "--batch", "x",
          files=("latency.json",), match=r"--batch"),
        C("form-bad", "predict", "lenet_1c1f", "-m", "latency.json", "--form", "tree",
          files=("latency.json",), match=r"--form"),
        C("model-missing", "predict", "lenet_1c1f", "-m", "none.json",
          match=r"no latency model.*model fit"),
        C("model-folder", "predict", "lenet_1c1f", "-m", "dir.json", files=("dir.json",),
          match=r"is a folder"),
        C("model-junk", "predict", "lenet_1c1f", "-m", "junk.json", files=("junk.json",),
          match=r"not a readable latency model"),
        C("model-is-records", "predict", "lenet_1c1f", "-m", RESULTS,
          match=r"not a (readable )?latency model"),
        C("no-net", "predict", "-m", "latency.json", files=("latency.json",), code=2,
          match=r"NETS|argument"),
        C("batch-huge", "predict", "lenet_1c1f", "-m", "latency.json", "--batch", "1000000000",
          files=("latency.json",), match=r"--batch must be within"),
        C("interval-inf", "predict", "lenet_1c1f", "-m", "inf_interval.json",
          files=("inf_interval.json",), match=r"is damaged .*interval.*model fit"),
        C("coef-nan", "predict", "lenet_1c1f", "-m", "nan_coef.json", files=("nan_coef.json",),
          match=r"is damaged .*coefficients"),
        C("range-reversed", "predict", "lenet_1c1f", "-m", "reversed_range.json",
          files=("reversed_range.json",), match=r"is damaged .*lo <= hi"),
        C("range-unknown", "predict", "lenet_1c1f", "-m", "odd_range.json",
          files=("odd_range.json",), match=r"is damaged"),
        C("model-nested", "predict", "lenet_1c1f", "-m", "nested.json", files=("nested.json",),
          match=r"not a readable latency model"),
    ]),
    ("select", [
        C("no-budget", "select", "-m", "latency.json", files=("latency.json",),
          match=r"give a budget"),
        C("frame-and-batch", "select", "-m", "latency.json", "--budget-ms", "10",
          "--tiles-per-frame", "256", "--batch", "64", files=("latency.json",),
          match=r"--batch goes with --tiles-per-ms"),
        C("both-budgets", "select", "-m", "latency.json", "--tiles-per-ms", "5", "--budget-ms",
          "33", "--tiles-per-frame", "374", files=("latency.json",), match=r"not both"),
        C("budget-negative", "select", "-m", "latency.json", "--budget-ms", "-1",
          "--tiles-per-frame", "374", files=("latency.json",), match=r"--budget-ms"),
        C("budget-nan", "select", "-m", "latency.json", "--tiles-per-ms", "nan",
          files=("latency.json",), match=r"--tiles-per-ms"),
        C("frame-0", "select", "-m", "latency.json", "--budget-ms", "33", "--tiles-per-frame",
          "0", files=("latency.json",), match=r"--tiles-per-frame"),
        C("accuracy-percent", "select", "-m", "latency.json", "--tiles-per-ms", "1",
          "--min-accuracy", "98", files=("latency.json",), match=r"--min-accuracy .*fraction"),
        C("impossible", "select", "-m", "latency.json", "--tiles-per-ms", "1e9",
          files=("latency.json",), match=r"no candidate meets .*the fastest"),
        C("grid-batch", "select", "-m", "latency.json", "--tiles-per-ms", "1", "--grid",
          "batch=16", files=("latency.json",), match=r"network fields only"),
        C("grid-huge", "select", "-m", "latency.json", "--tiles-per-ms", "1", "--grid",
          "depth=1..100000;neurons=1..100000", files=("latency.json",), match=r"beyond"),
        C("train-top-50", "select", "-m", "latency.json", "--tiles-per-ms", "1", "--train-top",
          "50", files=("latency.json",), match=r"--train-top"),
        C("train-top-foreign", "select", "-m", "latency.json", "--tiles-per-ms", "1",
          "--train-top", "1", files=("latency.json",), match=r"speaks for cpu-synthetic-2c"),
        C("epochs-0", "select", "-m", "latency.json", "--tiles-per-ms", "1", "--train-top", "1",
          "--epochs", "0", files=("latency.json",), match=r"--epochs"),
        C("models-file", "select", "-m", "latency.json", "--tiles-per-ms", "1", "--models",
          "notes.txt", files=("latency.json", "notes.txt"), match=r"--models"),
        C("records-missing", "select", "-m", "latency.json", "--tiles-per-ms", "1",
          "--records", "none.jsonl", files=("latency.json",), match=r"none\.jsonl"),
        C("grid-empty", "select", "-m", "latency.json", "--tiles-per-ms", "1", "--grid", "",
          files=("latency.json",), match=r"--grid"),
        C("train-top-data-missing", "select", "-m", "latency.json", "--tiles-per-ms", "1",
          "--train-top", "1", "--data", "/nonexistent", files=("latency.json",), match=r"--data"),
    ]),
    ("backends", [
        C("extra-argument", "backends", "extra", code=2, match=r"extra|argument"),
        C("unknown-option", "backends", "--verbose", code=2, match=r"--verbose"),
    ]),
    ("cnndeploy", [
        C("unknown-command", "benchmark", code=2, match=r"benchmark"),
        C("unknown-option", "--frobnicate", code=2, match=r"--frobnicate"),
    ]),
]

# Results files that must read as usual (damaged lines skipped with a warning, never fatal).
READABLE: list[tuple[str, tuple[str, ...]]] = [
    ("schema_str", ("merge", "report", "compare", "sweep")),
    ("schema_null", ("merge", "report", "compare", "sweep")),
    ("no_stats", ("report", "compare")),
    ("stats_str", ("report", "compare")),
]


# -- running a case ------------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def prepare(case: Case, folder: Path, fx: Fixtures) -> dict[str, str]:
    (folder / "results").mkdir(parents=True, exist_ok=True)
    (folder / RESULTS).write_bytes(fx.records)
    (folder / SWEEP).write_bytes(fx.records)
    for name in case.files:
        MAKERS[name](folder, fx)
    return _snapshot(folder)


@dataclass
class Outcome:
    code: int
    output: str  # stdout and stderr together
    stderr: str


def verdict(case: Case, got: Outcome, before: dict[str, str], folder: Path) -> list[str]:
    """What went wrong with this case (empty: it ended as promised)."""
    problems = []
    if "Traceback" in got.output:
        problems.append("traceback")
    if got.code == 0:
        problems.append("exit 0 on bad input")
    elif got.code != case.code:
        problems.append(f"exit {got.code}, wanted {case.code}")
    lines = [ln for ln in got.stderr.splitlines() if ln.startswith("error:")]
    if any(not c.isprintable() for c in "".join(case.argv)):  # a newline typed into a name
        after = got.stderr.split("error:", 1)[-1].splitlines()[1:]
        if any(not ln.startswith(("note:", "warning:")) for ln in after if ln.strip()):
            problems.append("the error spans lines")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error: lines")
    elif not re.search(case.match, lines[0]):
        problems.append(f"error line does not match {case.match!r}: {lines[0][:160]}")
    after = _snapshot(folder)
    lost = [name for name, digest in before.items() if after.get(name) != digest]
    if lost:
        problems.append(f"data loss: {', '.join(lost)}")
    leftovers = [n for n in after if n not in before and n.endswith((".part", ".tmp"))]
    if leftovers:
        problems.append(f"left behind: {', '.join(leftovers)}")
    return problems


def all_cases() -> list[tuple[str, Case]]:
    return [(group, case) for group, cases in CASES for case in cases]


# -- pytest ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fx(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    from typer.testing import CliRunner

    from cnn_deploy.arch import NetSpec
    from cnn_deploy.cli import app
    from cnn_deploy.export import export_spec

    folder = tmp_path_factory.mktemp("battery")
    other = export_spec(NetSpec.from_name("lenet_2c1f"), folder / "lenet_2c1f.onnx").path
    results = folder / "records.jsonl"
    done = CliRunner().invoke(app, ["bench", str(trained.onnx), "-b", "onnxruntime", "--batch",
                                    "1,2", *FAST, "--no-tune", "--results", str(results)])
    assert done.exit_code == 0, done.output
    return Fixtures(trained.checkpoint, trained.onnx, other, results.read_bytes())


@pytest.mark.parametrize("group, case", all_cases(), ids=[f"{g}:{c.id}" for g, c in all_cases()])
def test_bad_input(group: str, case: Case, fx: Fixtures, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cnn_deploy.cli import app

    monkeypatch.chdir(tmp_path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    before = prepare(case, tmp_path, fx)
    result = CliRunner().invoke(app, list(case.argv))
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        output += "Traceback\n" + "".join(traceback.format_exception(result.exception))
    problems = verdict(case, Outcome(result.exit_code, output, result.stderr), before, tmp_path)
    assert not problems, f"cnndeploy {' '.join(case.argv)}: {problems}\n{output}"


@pytest.mark.parametrize("maker, commands", READABLE, ids=[m for m, _ in READABLE])
def test_odd_records_are_skipped_not_fatal(maker: str, commands: tuple[str, ...], fx: Fixtures,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record whose schema is "1" or null, or whose stats are missing, is one warning; the
    rest of the file still merges, reports, compares and resumes."""
    from typer.testing import CliRunner

    from cnn_deploy.cli import app

    monkeypatch.chdir(tmp_path)
    MAKERS[maker](tmp_path, fx)
    runner = CliRunner()
    argvs = {"merge": ["results", "merge", "odd.jsonl", "-o", "merged.jsonl"],
             "report": ["report", "odd.jsonl", "-o", "rep"],
             "compare": ["compare", "odd.jsonl", "odd.jsonl"],
             "sweep": ["sweep", "--grid", "fc_layers=1;batch=1", "--results", "odd.jsonl",
                       "--dry-run"]}
    for command in commands:
        before = (tmp_path / "odd.jsonl").read_bytes()
        result = runner.invoke(app, argvs[command])
        assert result.exit_code == 0, f"{command}: {result.output}"
        assert "Traceback" not in result.output and "error:" not in result.output
        assert (tmp_path / "odd.jsonl").read_bytes() == before


# -- beyond the table: interrupts, concurrency, crashes, disks ---------------------------------
def _cnndeploy(args: list[str], cwd: Path) -> Any:
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "cnn_deploy", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_stops_at_a_cell_boundary_and_says_what_was_kept(tmp_path: Path) -> None:
    import signal
    import time

    results = tmp_path / "r.jsonl"
    proc = _cnndeploy(["bench", "--spec", "lenet_1c0f", "-b", "onnxruntime", "--batch",
                       "1,2,4,8,16,32", "--duration", "0.5", "--warmup", "0", "--processes", "1",
                       "--no-tune", "--results", str(results)], tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (results.is_file() and results.read_bytes().count(b"\n")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("interrupted:")]
    kept = results.read_bytes()
    assert kept.endswith(b"\n") and all(json.loads(x) for x in kept.splitlines())
    n = kept.count(b"\n")
    assert f"{n} record{'s' if n != 1 else ''} appended to {results}" in line
    assert "rerun `cnndeploy bench --spec lenet_1c0f" in line
    assert 1 <= n < 7  # the baseline's batch 1 and at least one more cell, not all 7


def test_two_identical_sweeps_at_once_measure_each_cell_once(tmp_path: Path) -> None:
    args = ["sweep", "--grid", "fc_layers=0,1;batch=1,2", "--passes", "1", "--duration", "0.05",
            "--no-tune", "--results", "results/sweep.jsonl"]
    runs = [_cnndeploy(args, tmp_path), _cnndeploy(args, tmp_path)]
    outputs = [p.communicate(timeout=240) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    from cnn_deploy.results.store import read

    keys = [r["cell"] for r in read(tmp_path / "results" / "sweep.jsonl").records]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4, keys
    assert not (tmp_path / "results" / ".sweep.jsonl.claims").exists()


def test_stale_temp_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import time

    from cnn_deploy.files import clean_stale_temp, host_tag

    dead = tmp_path / f"cnndeploy-999999999-{host_tag()}-x"
    mine = tmp_path / f"cnndeploy-{os.getpid()}-{host_tag()}-x"
    other_host = tmp_path / "cnndeploy-999999999-elsewhere-x"
    old, new = tmp_path / "cnndeploy-abcd", tmp_path / "cnndeploy-efgh"
    for folder in (dead, mine, other_host, old, new):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    removed = clean_stale_temp(tmp_path)
    assert sorted(removed) == sorted([dead, old])
    assert mine.is_dir() and other_host.is_dir() and new.is_dir()


def test_a_full_disk_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from cnn_deploy.errors import ResultsError
    from cnn_deploy.results import store

    path = tmp_path / "r.jsonl"
    store.append(path, {"schema": 1, "kind": "bench", "n": 1})
    before = path.read_bytes()
    real_open = Path.open

    class Full:
        """A file on a disk that fills up 7 bytes into the next write."""

        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.fh.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

        def write(self, data: Any) -> int:
            self.fh.write(bytes(data)[:7])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(self: Path, mode: str = "r", *a: Any, **k: Any) -> Any:
        fh = real_open(self, mode, *a, **k)
        return Full(fh) if mode == "ab" else fh

    monkeypatch.setattr(Path, "open", fake_open)
    with pytest.raises(ResultsError, match=r"No space left on device\): free some space"):
        store.append(path, {"schema": 1, "kind": "bench", "n": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_a_checkpoint_is_never_paired_with_another_networks_onnx(fx: Fixtures, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """bench X.pt with another net's X.onnx beside it times X's own export, on every row."""
    from typer.testing import CliRunner

    from cnn_deploy.cli import app

    monkeypatch.chdir(tmp_path)
    shutil.copyfile(fx.checkpoint, tmp_path / "lenet_1c1f.pt")
    shutil.copyfile(fx.other_onnx, tmp_path / "lenet_1c1f.onnx")
    done = CliRunner().invoke(app, ["bench", "lenet_1c1f.pt", "-b", "onnxruntime", "--batch", "1",
                                    *FAST, "--no-tune", "--results", "r.jsonl"])
    assert done.exit_code == 0, done.output
    from cnn_deploy.results.store import read

    records = read(tmp_path / "r.jsonl").records
    assert {r["model"]["spec"]["name"] for r in records} == {"lenet_1c1f"}
    assert {r["model"]["onnx_sha256"] for r in records} != {
        hashlib.sha256(fx.other_onnx.read_bytes()).hexdigest()}


def test_an_unexpected_exception_is_called_a_bug_and_keeps_its_traceback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cnn_deploy.cli import app

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("cnn_deploy.data.load_mnist", broken)
    done = CliRunner().invoke(app, ["data", "info"])
    assert isinstance(done.exception, ZeroDivisionError)
    assert "internal error: an unexpected ZeroDivisionError is a bug in cnn_deploy" in done.stderr


# -- a report for the issue: `python tests/test_battery.py [FIXTURE_FOLDER]` -------------
def _main() -> int:  # pragma: no cover - a tool for the issue's closing note
    import subprocess
    import tempfile

    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/r13/fx")
    fixtures = Fixtures(base / "lenet_1c1f.pt", base / "lenet_1c1f.onnx", base / "lenet_2c1f.onnx",
                        (base / "a.jsonl").read_bytes())
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    counts = {"cases": 0, "clean": 0, "traceback": 0, "exit 0": 0, "data loss": 0, "other": 0}
    for group, case in all_cases():
        if only and not f"{group}:{case.id}".startswith(only):
            continue
        with tempfile.TemporaryDirectory(prefix="battery-") as tmp:
            folder = Path(tmp)
            before = prepare(case, folder, fixtures)
            env = {**os.environ, **case.env}
            try:
                done = subprocess.run([sys.executable, "-m", "cnn_deploy", *case.argv], cwd=folder,
                                      env=env, capture_output=True, text=True,
                                      timeout=int(os.environ.get("BATTERY_TIMEOUT", "60")))
                got = Outcome(done.returncode, done.stdout + done.stderr, done.stderr)
            except subprocess.TimeoutExpired:
                got = Outcome(-9, "hang (over 60 s)", "")
            problems = verdict(case, got, before, folder)
        counts["cases"] += 1
        counts["clean"] += not problems
        counts["traceback"] += any(p == "traceback" for p in problems)
        counts["exit 0"] += any(p.startswith("exit 0") for p in problems)
        counts["data loss"] += any(p.startswith("data loss") for p in problems)
        counts["other"] += bool(problems) and not any(
            p == "traceback" or p.startswith(("exit 0", "data loss")) for p in problems)
        err = next((ln for ln in got.stderr.splitlines() if ln.startswith("error:")), "")
        print(f"{group:14} {case.id:26} exit {got.code:3} tb={'Y' if 'Traceback' in got.output else '-'} "
              f"{'OK ' if not problems else 'BAD'} {'; '.join(problems)[:200]} | {err[:150]}",
              flush=True)
    print(counts)
    return 0


def test_an_interrupt_names_the_files_written_whole(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`select --train-top` stopped by Ctrl-C after training a candidate: its checkpoint and
    ONNX file are kept, and the line says so (a temporary file, gone by then, is not named)."""
    from cnn_deploy import files
    from cnn_deploy.cli import interrupts, render
    from cnn_deploy.results import store

    monkeypatch.setattr(files, "_WRITTEN", {})
    monkeypatch.setattr(store, "_APPENDED", {})
    checkpoint, onnx = tmp_path / "lenet_2c1f.pt", tmp_path / "lenet_2c1f.onnx"
    for path in (checkpoint, onnx):
        path.write_bytes(b"x")
        files.wrote(path)
    files.wrote(tmp_path / "gone" / "lenet_1c1f.onnx")
    with render.err.capture() as captured:
        interrupts.report(["select", "--budget-ms", "5", "--train-top", "2"])
    line = " ".join(captured.get().split())
    assert f"no records were appended; written whole and kept: {checkpoint}, {onnx};" in line
    assert "gone" not in line and "rerun `cnndeploy select --budget-ms 5" in line


if __name__ == "__main__":
    sys.exit(_main())
