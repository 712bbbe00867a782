"""The OpenVINO backend: parity with onnxruntime on real digits, several batch sizes on one
runner, options that reach OpenVINO (read back from the compiled model), bad options and
files refused, per-layer profiling, the probe."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install openvino")

from cnn_deploy.backends.base import LayerTime, Target  # noqa: E402
from cnn_deploy.backends.openvino import (  # noqa: E402
    BACKEND,
    OpenVinoRunner,
    import_openvino,
    openvino_version,
    probe,
)
from cnn_deploy.backends.openvino_layers import (  # noqa: E402
    NodeMean,
    fused_constituents,
    openvino_layer_times,
)
from cnn_deploy.errors import BackendError, DataError, ModelError  # noqa: E402

SPEC = "lenet_2c1f"


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained lenet_2c1f exported as the pipeline exports (raw pixels, dynamic batch)."""
    import torch

    from cnn_deploy.arch import NetSpec
    from cnn_deploy.export import export_module, raw_pixel_module

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("openvino") / f"{SPEC}.onnx"
    return export_module(raw_pixel_module(NetSpec.from_name(SPEC).build()), out,
                         {"spec": SPEC, "precision": "fp32"})


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """64 real MNIST test digits as raw 0..255 float pixels, (64, 1, 28, 28)."""
    from cnn_deploy.data import load_mnist, to_float

    try:
        mnist = load_mnist()
    except DataError as exc:
        pytest.skip(str(exc))
    return to_float(mnist.test_images[:64], normalise=False)


@pytest.fixture(scope="module")
def one_thread(onnx_path: Path) -> Iterator[OpenVinoRunner]:
    with OpenVinoRunner(onnx_path, {"threads": 1}) as runner:
        yield runner


def _compiled_property(runner: OpenVinoRunner, prop: object) -> object:
    return runner._compiled.get_property(prop)


# -- numbers ---------------------------------------------------------------------------
def test_matches_onnxruntime_on_real_digits(onnx_path: Path, digits: np.ndarray) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: digits})[0]
    with OpenVinoRunner(onnx_path) as runner:
        got = runner.infer(digits)
        # f32 pinned (the CPU plugin's default is bf16 where the CPU has it) and it ran so
        assert runner.applied["precision"] == "f32"
        assert runner.applied["runtime_precisions"] == ["f32"]
    assert got.shape == want.shape == (64, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_two_batch_sizes_on_one_runner(one_thread: OpenVinoRunner, digits: np.ndarray) -> None:
    runner = one_thread
    full = runner.infer(digits)
    single = runner.infer(digits[:1])
    assert full.shape == (64, 10) and single.shape == (1, 10)
    np.testing.assert_allclose(single[0], full[0], rtol=1e-5, atol=1e-6)
    # Staged batches of two sizes, run alternately: each runs on the model compiled for it.
    big, small = runner.stage(digits), runner.stage(digits[5:6])
    out_small = runner.to_numpy(runner.run(small))
    out_big = runner.to_numpy(runner.run(big))
    np.testing.assert_allclose(out_small[0], full[5], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_big, full, rtol=1e-5, atol=1e-6)
    assert runner.to_numpy(runner.run(big)) is not out_big  # a fresh array per run


# -- options -----------------------------------------------------------------------------
def test_options_reach_openvino(onnx_path: Path) -> None:
    props, hint = ov.properties, ov.properties.hint
    with OpenVinoRunner(onnx_path, {"hint": "throughput", "threads": 1, "streams": 1}) as runner:
        assert str(_compiled_property(runner, hint.performance_mode)) == "THROUGHPUT"
        assert _compiled_property(runner, props.inference_num_threads) == 1
        assert _compiled_property(runner, props.num_streams) == 1
        assert (runner.applied["hint"], runner.applied["threads"], runner.applied["streams"]) == \
            ("throughput", 1, 1)
        assert runner.label == "openvino throughput 1t"
        assert runner.notes == []
    if _cores() >= 2:
        with OpenVinoRunner(onnx_path, {"hint": "latency", "threads": 2, "streams": 2}) as runner:
            assert _compiled_property(runner, props.num_streams) == 2
            assert _compiled_property(runner, props.inference_num_threads) == 2
            assert runner.label == "openvino latency 2t 2 streams"


def test_what_openvino_could_not_apply_is_recorded(onnx_path: Path) -> None:
    # Every stream needs a thread: OpenVINO runs 1 stream on 1 thread, and the record says so.
    with OpenVinoRunner(onnx_path, {"threads": 1, "streams": 2}) as runner:
        assert runner.applied["streams"] == 1
        assert runner.notes == ["openvino.streams=2: OpenVINO applied 1"]


def test_defaults_and_parsing() -> None:
    assert BACKEND.resolve({}) == {"hint": "latency", "threads": None, "streams": None}
    assert BACKEND.resolve({"hint": "THROUGHPUT", "threads": "2", "streams": "default"}) == \
        {"hint": "throughput", "threads": 2, "streams": None}


@pytest.mark.parametrize(("given", "says"), [
    ({"hint": "fast"}, "not one of latency, throughput"),
    ({"threads": 0}, "at least 1"),
    ({"streams": -1}, "at least 1"),
    ({"threads": "two"}, "expected an integer"),
    ({"thread": 2}, "Did you mean 'openvino.threads'"),
])
def test_bad_options_are_refused(given: dict[str, object], says: str) -> None:
    with pytest.raises(BackendError, match=says):
        BACKEND.resolve(given)
    with pytest.raises(BackendError, match=says):  # a runner built directly checks them too
        OpenVinoRunner(Path("never-read.onnx"), given)


def test_label_before_and_after_compiling(onnx_path: Path) -> None:
    runner = OpenVinoRunner(onnx_path, {"threads": 1})
    assert runner.label == "openvino latency 1t"  # what was asked
    with runner:
        assert runner.label == "openvino latency 1t"  # what the compiled model reports
        assert "\n" not in runner.label
    assert OpenVinoRunner(onnx_path).label == "openvino latency"


def test_registry_entry(onnx_path: Path) -> None:
    from cnn_deploy.backends import registry

    if "cnn_deploy.backends.openvino" not in registry.MODULES:
        pytest.skip("cnn_deploy.backends.registry.MODULES does not list the openvino module yet")
    assert registry.get("ov") is BACKEND and registry.get("OpenVINO") is BACKEND
    runner = registry.runner("ov", Target(SPEC, onnx=onnx_path), {"threads": "1"})
    assert isinstance(runner, OpenVinoRunner)
    assert runner.options == {"hint": "latency", "threads": 1, "streams": None}
    with pytest.raises(BackendError, match="needs an ONNX file"):
        registry.runner("openvino", Target(SPEC), {})
    assert BACKEND.profiles and BACKEND.needs == "onnx" and BACKEND.devices == ("cpu",)


# -- errors a user can cause ------------------------------------------------------------------
def test_missing_onnx_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no ONNX file"), OpenVinoRunner(tmp_path / "nope.onnx"):
        pass


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_onnx_file_is_a_model_error(onnx_path: Path, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "bad.onnx"
    data = onnx_path.read_bytes()
    bad.write_bytes(b"not an onnx file" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ModelError, match="re-export"), OpenVinoRunner(bad):
        pass


def test_openvino_missing_is_a_backend_error(monkeypatch: pytest.MonkeyPatch, onnx_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails
    install = "openvino is not installed: pip install openvino (or pip install -e '.[cpu]')"
    with pytest.raises(BackendError) as info:
        import_openvino()
    assert str(info.value) == install
    (row,) = probe()
    assert not row.usable and row.why == install
    with pytest.raises(BackendError, match="not installed"), OpenVinoRunner(onnx_path):
        pass


# -- per-layer profiling ----------------------------------------------------------------------
def test_profile_layers(one_thread: OpenVinoRunner, digits: np.ndarray) -> None:
    runner, x, runs = one_thread, digits[:16], 3
    before = runner.infer(x)
    layers = runner.profile_layers(x, runs)
    assert all(isinstance(layer, LayerTime) for layer in layers)
    assert {layer.run for layer in layers} == set(range(runs))
    per_run: dict[int, float] = defaultdict(float)
    for layer in layers:
        assert layer.time_ms >= 0
        per_run[layer.run] += layer.time_ms
    assert all(per_run[i] > 0 for i in range(runs))
    ops = {layer.op for layer in layers}
    assert any("conv" in op.lower() for op in ops), ops
    assert ops & {"FullyConnected", "MatMul", "Gemm", "InnerProduct"}, ops
    assert not ops & {"Parameter", "Result"}  # nodes that never run are left out
    # fused nodes name the original ops; the Conv's bias Add and ReLU are fused on any CPU
    model_types = {op.get_type_name() for op in ov.Core().read_model(str(runner.path)).get_ordered_ops()}
    fused = [layer for layer in layers if layer.constituents]
    assert any("Relu" in layer.constituents for layer in fused)
    assert all(len(layer.constituents) > 1 and set(layer.constituents) <= model_types for layer in fused)
    # every run lists the same layers
    names = [[layer.layer for layer in layers if layer.run == i] for i in range(runs)]
    assert names[0] and all(n == names[0] for n in names)
    # the timing model comes back after profiling, with the same numbers
    np.testing.assert_allclose(runner.infer(x), before, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 1"):
        runner.profile_layers(x, 0)


def test_running_means_become_per_run_times() -> None:
    # The CPU plugin reports total_us // count after each inference; per-run times come back
    # within `count` µs, their mean within 1 µs.
    rng = np.random.default_rng(0)
    truth = {"conv": rng.integers(50, 5000, 12), "pool": rng.integers(0, 3, 12)}
    snapshots = [[NodeMean("conv", "Convolution", True, int(truth["conv"][:k].sum()) // k),
                  NodeMean("relu", "Relu", False, 0),  # fused away: never reported
                  NodeMean("pool", "MaxPool", True, int(truth["pool"][:k].sum()) // k)]
                 for k in range(1, 13)]
    layers = openvino_layer_times(snapshots, {"conv": ("Convolution", "Add", "Relu")}, skip=1)
    assert {layer.layer for layer in layers} == {"conv", "pool"}
    assert [layer.run for layer in layers if layer.layer == "conv"] == list(range(11))
    for name in ("conv", "pool"):
        got = np.array([layer.time_ms * 1000 for layer in layers if layer.layer == name])
        want = truth[name][1:].astype(float)
        assert np.all(np.abs(got - want) <= np.arange(2, 13)), (name, got, want)
        assert abs(got.mean() - want.mean()) <= 1.0
    assert all(layer.constituents == ("Convolution", "Add", "Relu")
               for layer in layers if layer.layer == "conv")


def test_fused_constituents_include_the_matmul_a_fully_connected_hides() -> None:
    # The shape of OpenVINO's graph for ONNX Conv(+bias) -> Relu and Gemm(+bias) -> Relu.
    original = {
        "x": ("Parameter", ()), "w": ("Constant", ()), "b": ("Constant", ()),
        "conv/WithoutBiases": ("Convolution", ("x", "w")), "conv": ("Add", ("conv/WithoutBiases", "b")),
        "relu": ("Relu", ("conv",)), "fc/WithoutBiases": ("MatMul", ("relu", "w")),
        "alpha": ("Multiply", ("fc/WithoutBiases", "b")), "beta": ("Multiply", ("b", "b")),
        "fc": ("Add", ("alpha", "beta")), "relu_2": ("Relu", ("fc",)),
        "pool": ("MaxPool", ("relu_2",)),
        # the classifier: its Add is renamed after the graph output, not '<node>'
        "fc_1/WithoutBiases": ("MatMul", ("pool", "w")), "alpha_1": ("Multiply", ("fc_1/WithoutBiases", "b")),
        "logits": ("Add", ("alpha_1", "b")),
    }
    runtime = [("x", "x"), ("conv/WithoutBiases", "conv/WithoutBiases,conv,relu"),
               ("fc", "fc,relu_2"), ("pool", "pool"), ("reorder", ""), ("logits", "logits")]
    # A bias Add belongs to its Conv / Gemm (the ONNX op holds the bias), as in every other
    # backend: the classifier's MatMul + bias is one gemm, not a fusion.
    assert fused_constituents(runtime, original) == {
        "conv/WithoutBiases": ("Convolution", "Relu"),
        "fc": ("MatMul", "Relu"),
    }


# -- probe ----------------------------------------------------------------------------------
def test_probe_says_usable() -> None:
    (row,) = probe()
    assert (row.backend, row.target, row.gpu) == ("openvino", "CPU", False)
    assert row.usable, row.why
    assert row.why.startswith(f"openvino {openvino_version(ov)}, ")
    assert BACKEND.probe is probe


# -- the one categoriser ----------------------------------------------------------------------
# How OpenVINO's CPU plugin names a node that runs each ONNX op of test_categories.SAME_OPS.
OPENVINO_OPS = {"Conv": "Convolution", "Gemm": "FullyConnected", "MaxPool": "MaxPool",
                "Relu": "Relu", "Reshape": "Reorder", "Cast": "Convert", "Concat": "Concat",
                "Gather": "Gather", "Slice": "StridedSlice", "Pad": "Pad"}


@pytest.mark.parametrize("onnx_op", OPENVINO_OPS)
def test_openvino_names_land_where_every_backend_puts_the_op(onnx_op: str) -> None:
    from cnn_deploy.profile.categories import categorise, op_category

    node = LayerTime(f"node_{onnx_op.lower()}", OPENVINO_OPS[onnx_op], 1.0, 0)
    assert categorise(node) == (op_category(onnx_op), ())


def test_a_profile_has_the_same_categories_as_onnxruntimes(onnx_path: Path) -> None:
    """The deployed graphs of both runtimes fuse Conv+Relu and Gemm+Relu alike."""
    from cnn_deploy.profile.run import profile_target
    from cnn_deploy.profile.table import category_key

    target = Target("lenet_2c1f", onnx_path)
    keys = {}
    for backend in ("openvino", "onnxruntime"):
        p = profile_target(target, backend, 16, runs=2)
        keys[backend] = {category_key(r) for r in p.table} - {"memory"}  # reorders differ
    assert keys["openvino"] == keys["onnxruntime"] == {
        "fused:conv+elementwise", "pool", "fused:gemm+elementwise", "gemm"}
