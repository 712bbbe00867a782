"""Per-layer profiles on real exported networks, real ORT profile files and real torch.profiler
events: categories, fusion, the arch.py mapping, the overhead ratio and the records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cnn_deploy.backends.base import LayerTime, Target
from cnn_deploy.backends.ort import ort_layer_times
from cnn_deploy.bench.targets import resolve_target
from cnn_deploy.bench.timing import TimingConfig
from cnn_deploy.errors import BenchError, SpecError
from cnn_deploy.profile import categories
from cnn_deploy.profile import run as prof
from cnn_deploy.profile import table as ptable
from cnn_deploy.results import records
from cnn_deploy.results.store import read

TIMING = TimingConfig(warmup_ms=5.0, warmup_iterations=1, min_duration_ms=10.0, min_iterations=3)


@pytest.fixture(scope="module")
def lenet_3c1f() -> Iterator[Target]:
    with resolve_target(None, "lenet_3c1f") as (target, _):
        yield target


def run(target: Target, backend: str, unfused: bool = False, batch: int = 8) -> prof.Profile:
    return prof.profile_target(target, backend, batch, runs=3, unfused=unfused, timing=TIMING)


def by_op(p: prof.Profile) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in p.table:
        out.setdefault(row["op"], []).append(row)
    return out


def test_ort_default_is_the_fused_deployed_graph(lenet_3c1f: Target) -> None:
    p = run(lenet_3c1f, "onnxruntime")
    assert p.fused and p.options["opt_level"] == "extended"
    assert ptable.categorised_share(p.table) >= 0.95
    ops = by_op(p)
    # ORT 1.x at EXTENDED: Conv+Relu -> FusedConv (named after the Conv), Gemm+Relu ->
    # FusedGemm ("fused node_linear"); MaxPool, Reshape and the classifier Gemm stay.
    assert "Relu" not in ops and "Conv" not in ops
    convs = ops["FusedConv"]
    assert len(convs) == 3
    assert all(r["category"] == "fused" and r["constituents"] == "conv+elementwise"
               and r["fused_ops"] == "Conv+Relu" for r in convs)
    assert [r["arch_layers"] for r in convs] == [f"conv{i}+relu_conv{i}" for i in (1, 2, 3)]
    assert ops["FusedGemm"][0]["arch_layers"] == "fc1+relu_fc1"
    assert ops["Gemm"][0]["arch_layers"] == "classifier"
    assert ops["Reshape"][0]["category"] == "memory" and ops["Reshape"][0]["flops"] is None
    assert all(r["gflops_per_s"] > 0 for r in convs)
    assert convs[0]["flops"] == sum(c.flops for c in lenet_3c1f.spec.layer_costs()[:2]) * 8
    assert p.overhead_ratio > 0 and p.unprofiled_ms > 0
    assert all(len(r["time_ms_runs"]) == 3 for r in p.table)
    assert sum(r["share"] for r in p.table) == pytest.approx(1.0)


def test_ort_unfused_keeps_every_op_separate(lenet_3c1f: Target) -> None:
    p = run(lenet_3c1f, "onnxruntime", unfused=True)
    assert not p.fused and p.options["opt_level"] == "basic"
    ops = by_op(p)
    assert {len(ops[o]) for o in ("Conv",)} == {3} and len(ops["Relu"]) == 4
    assert len(ops["MaxPool"]) == 1 and len(ops["Gemm"]) == 2
    assert not any(r["category"] == "fused" for r in p.table)
    assert [r["arch_layers"] for r in p.table if r["arch_layers"]] == [
        c.layer for c in lenet_3c1f.spec.layer_costs()]
    assert ptable.categorised_share(p.table) >= 0.95


def test_torch_eager_top_level_aten_ops(lenet_3c1f: Target) -> None:
    p = run(lenet_3c1f, "torch", unfused=True)
    assert not p.fused and any("unfused already" in n for n in p.notes)
    cats = {r["category"] for r in p.table}
    assert {"conv", "elementwise", "pool", "gemm", "memory"} <= cats
    assert [r["layer"] for r in p.table][:2] == ["aten::conv2d#0", "aten::relu#0"]
    assert [r["arch_layers"] for r in p.table if r["arch_layers"]] == [
        c.layer for c in lenet_3c1f.spec.layer_costs()]
    assert ptable.categorised_share(p.table) >= 0.95
    assert p.overhead_ratio > 0


@pytest.mark.parametrize(("name", "dominant"), [("lenet_5c1f", "conv"), ("lenet_1c5f", "gemm")])
def test_the_expected_category_dominates(name: str, dominant: str) -> None:
    # Measured on the 2-core EPYC at batch 16, unfused ORT, three repeats: lenet_5c1f conv
    # 95.8-96.0 % of layer time; lenet_1c5f gemm 69.6-70.2 % (conv 15-16 %, pool 7.5 %).
    with resolve_target(None, name) as (target, _):
        p = prof.profile_target(target, "onnxruntime", 16, runs=3, unfused=True, timing=TIMING)
    totals = ptable.category_totals(p.table)
    assert totals[0]["category"] == dominant, totals
    assert totals[0]["share"] > 0.5


def test_records_round_trip(lenet_3c1f: Target, tmp_path: Path) -> None:
    p = run(lenet_3c1f, "onnxruntime")
    path = tmp_path / "r.jsonl"
    run_id = records.save_profiles([p], path)
    (record,) = read(path).records
    assert record["kind"] == "profile" and record["run_id"] == run_id
    assert record["device"]["kind"] == "cpu" and "onnxruntime" in record["versions"]
    assert record["batch"] == 8 and record["graph"] == "fused"
    assert record["backend"]["options"]["opt_level"] == "extended"
    assert record["overhead_ratio"] == pytest.approx(p.overhead_ratio)
    assert record["unprofiled_ms"] > 0 and len(record["unprofiled_samples_ms"]) >= 3
    assert [r["layer"] for r in record["layers"]] == [r["layer"] for r in p.table]
    assert record["layers"][0]["time_ms_runs"] == p.table[0]["time_ms_runs"]


def test_ort_events_are_split_into_runs_and_the_warm_up_dropped() -> None:
    def node(name: str, ts: int, dur: int, op: str) -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op}}

    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 50},
              node("c", 1, 40, "FusedConv"),
              {"cat": "Session", "name": "model_run", "ts": 100, "dur": 50},
              node("c", 101, 20, "FusedConv"), node("g", 130, 4, "Gemm"),
              {"cat": "Node", "name": "c_fence_before", "ts": 100, "dur": 0}]
    got = ort_layer_times(events, {"c": ("Conv", "Relu")}, skip=1)
    assert got == [LayerTime("c", "FusedConv", 0.02, 0, ("Conv", "Relu")),
                   LayerTime("g", "Gemm", 0.004, 0)]
    assert categories.categorise(got[0]) == ("fused", ("conv", "elementwise"))


def test_op_categories() -> None:
    assert categories.op_category("aten::mkldnn_convolution") == "conv"
    assert categories.op_category("aten::addmm") == "gemm"
    assert categories.op_category("aten::max_pool2d_with_indices") == "pool"
    assert categories.op_category("Relu") == "elementwise"
    assert categories.op_category("aten::copy_") == "memory"
    assert categories.op_category("SomethingNew") == "other"


def test_expand_specs() -> None:
    assert prof.expand_specs("lenet_{1..3}c1f") == ["lenet_1c1f", "lenet_2c1f", "lenet_3c1f"]
    assert prof.expand_specs("lenet_1c1f, lenet_1c2f") == ["lenet_1c1f", "lenet_1c2f"]
    assert prof.family_name(["lenet_1c1f", "lenet_5c1f"]) == "lenet_1c1f-lenet_5c1f"
    with pytest.raises(SpecError):
        prof.expand_specs("lenet_{1..2}x")


def test_bad_arguments(lenet_3c1f: Target) -> None:
    with pytest.raises(BenchError, match="runs"):
        prof.profile_target(lenet_3c1f, "onnxruntime", 8, runs=0)
    with pytest.raises(BenchError, match="one backend"):
        prof.check_backend("onnxruntime,torch", None)
    with pytest.raises(BenchError, match=r"NVIDIA GPU|--engine"):  # no GPU / a GPU here
        prof.check_backend("tensorrt", None)


def test_tensorrt_layers_are_categorised_by_their_names() -> None:
    from cnn_deploy.backends.base import LayerTime

    layers = [LayerTime("node_conv2d + node_relu", "CaskConvolution", 3.0, 0,
                        ("node_conv2d", "node_relu")),
              LayerTime("Reformatting CopyNode for Input Tensor 0 to node_conv2d + node_relu",
                        "Reformat", 1.0, 0)]
    table = ptable.layer_table(layers, 16, None)  # the one categoriser, whatever the backend
    assert [(r["category"], r["constituents"]) for r in table] == [
        ("fused", "conv+elementwise"), ("memory", "")]
    assert table[0]["share"] == 0.75


def test_unfused_is_refused_where_a_backend_cannot_unfuse() -> None:
    with pytest.raises(BenchError, match=r"openvino profiles its deployed \(fused\) graph only: "
                                         r"drop --unfused"):
        prof.profile_options("openvino", True)
    assert prof.profile_options("openvino", False) == ({}, [])
    opts, notes = prof.profile_options("onnxruntime", True, {"threads": 1})
    assert opts == {"threads": 1, "opt_level": "basic"} and "unfused" in notes[0]


def test_onnxruntime_gpu_providers_refuse_per_layer_profiling(tmp_path: Path) -> None:
    """Their node times are host launch times (CUDA) or one fused node (TensorRT)."""
    import numpy as np

    from cnn_deploy.backends.ort import OrtRunner
    from cnn_deploy.errors import BackendError

    for provider in ("cuda", "tensorrt"):
        runner = OrtRunner(tmp_path / "m.onnx", {"provider": provider})
        runner._active = True  # as inside `with`; the guard comes before any session
        with pytest.raises(BackendError, match=r"does not measure the GPU kernels: profile "
                                               r"onnxruntime on the cpu provider"):
            runner.profile_layers(np.zeros((1, 1, 28, 28), np.float32), 1)


def test_tensorrt_profiles_by_spec_need_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import hide_gpus

    hide_gpus(monkeypatch)
    with pytest.raises(BenchError, match="profiling with tensorrt needs an NVIDIA GPU"):
        prof.check_backend("tensorrt", None, by_spec=True)
