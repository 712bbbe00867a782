"""The one target resolver and rows builder: what is timed, on which rows, beside which baseline."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cnn_deploy import engine
from cnn_deploy.arch import NetSpec
from cnn_deploy.backends.base import Target
from cnn_deploy.bench import targets
from cnn_deploy.errors import BackendError, BenchError
from cnn_deploy.onnxfile import read_metadata

from fakes import hide_gpus

SPEC = NetSpec.from_name("lenet_1c1f")


def test_the_baseline_row_comes_first_and_is_marked_by_a_field() -> None:
    target = Target(SPEC.name, Path("m.onnx"), SPEC)
    rows, notes = targets.build_rows(target, ["onnxruntime", "torch"], {})
    assert [(r.backend, r.baseline) for r in rows] == [
        ("torch", True), ("onnxruntime", False), ("torch", False)]
    assert rows[0].options["memory_format"] == "contiguous"
    assert rows[2].options["memory_format"] == "channels_last"
    assert notes == []


def test_a_torch_row_identical_to_the_baseline_is_not_timed_twice() -> None:
    target = Target(SPEC.name, Path("m.onnx"), SPEC)
    rows, _ = targets.build_rows(target, ["torch"], {"torch": {"memory_format": "contiguous"}})
    assert [(r.backend, r.baseline) for r in rows] == [("torch", True)]


def test_a_model_without_a_spec_has_no_torch_rows() -> None:
    rows, _ = targets.build_rows(Target("foreign", Path("m.onnx")), ["onnxruntime", "torch"], {})
    assert [r.backend for r in rows] == ["onnxruntime"] and not rows[0].baseline


def test_options_are_checked_and_the_device_follows_them(monkeypatch: pytest.MonkeyPatch) -> None:
    target = Target(SPEC.name, Path("m.onnx"), SPEC)
    with pytest.raises(BackendError, match=r"unknown option 'onnxruntime\.thread'"):
        targets.build_rows(target, ["onnxruntime"], {"onnxruntime": {"thread": 1}})
    hide_gpus(monkeypatch)
    with pytest.raises(BenchError, match=r"no backend asked for is usable here.*no torch rows: no GPU"):
        targets.build_rows(target, ["torch"], {"torch": {"device": "cuda"}})


def test_an_engine_target_defaults_to_tensorrt_beside_torch() -> None:
    target = Target(SPEC.name, None, SPEC, engine=Path("lenet_1c1f_fp16.plan"))
    assert targets.default_backends(target, {}) == ["tensorrt", "torch"]
    assert targets.default_backends(target, {"onnxruntime": {"provider": "tensorrt"}}) == [
        "tensorrt", "torch", "onnxruntime"]
    assert targets.default_backends(Target("x", Path("x.onnx")), {}) == ["onnxruntime", "torch"]


def test_batches_outside_an_engines_profile_are_refused_before_timing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "read_sidecar", lambda plan: SimpleNamespace(min_batch=4,
                                                                             max_batch=64))
    target = Target(SPEC.name, None, SPEC, engine=Path("lenet_1c1f_fp16.plan"))
    targets.check_batches(target, [4, 16, 64])
    with pytest.raises(BenchError, match=r"batch 1, 128 is outside lenet_1c1f_fp16.plan's batch "
                                         r"profile 4\.\.64.*--max-batch 128"):
        targets.check_batches(target, [1, 16, 128])
    monkeypatch.setattr(engine, "read_sidecar", lambda plan: None)  # no sidecar: the runner checks
    targets.check_batches(target, [1, 100_000])


def test_a_checkpoint_is_never_paired_with_another_networks_onnx(trained: Any,
                                                                 tmp_path: Path) -> None:
    """`bench X.pt` used to time whatever X.onnx sat beside it, even another network."""
    checkpoint = tmp_path / "mine.pt"
    shutil.copy(trained.checkpoint, checkpoint)
    other = targets.export_untrained(NetSpec.from_name("lenet_2c1f"), tmp_path / "other")
    shutil.copy(other, tmp_path / "mine.onnx")
    with targets.resolve_target(checkpoint, None) as (target, _):
        assert target.onnx is not None and target.onnx != tmp_path / "mine.onnx"
        assert read_metadata(target.onnx)["spec"] == "lenet_1c1f" == target.name
        assert target.checkpoint == checkpoint and target.trained


def test_a_checkpoint_uses_its_own_export_beside_it(trained: Any) -> None:
    with targets.resolve_target(trained.checkpoint, None) as (target, _):
        assert target.onnx == trained.onnx


def test_model_and_spec_are_exclusive() -> None:
    with pytest.raises(BenchError, match="give a model file"), targets.resolve_target(
            Path("a.onnx"), "lenet_1c1f"):
        pass
    with pytest.raises(BenchError, match="--engine names the network already"), \
            targets.resolve_target(Path("a.onnx"), None, Path("x.plan")):
        pass


def test_options_for_a_backend_not_benchmarked_are_refused() -> None:
    target = Target(SPEC.name, Path("m.onnx"), SPEC)
    with pytest.raises(BenchError, match=r"options given for openvino, which is not benchmarked: "
                                         r"add it to --backend \(now onnxruntime\)"):
        targets.build_rows(target, ["onnxruntime"], {"openvino": {"hint": "throughput"}})
    # the baseline backend's options may place the baseline without timing torch otherwise
    rows, _ = targets.build_rows(target, ["onnxruntime"], {"torch": {"threads": 1}})
    assert [r.backend for r in rows] == ["torch", "onnxruntime"]
    assert targets.default_backends(target, {"openvino": {"hint": "latency"}}) == [
        "onnxruntime", "torch", "openvino"]


def test_a_provider_that_is_not_there_skips_its_row_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hide_gpus(monkeypatch)
    target = Target(SPEC.name, Path("m.onnx"), SPEC)
    with pytest.raises(BenchError, match=r"no backend asked for is usable here.*onnxruntime "
                                         r"skipped: .*(not in this onnxruntime|no GPU)"):
        targets.build_rows(target, ["onnxruntime"], {"onnxruntime": {"provider": "tensorrt"}})


def test_an_onnx_file_beside_another_checkpoint_times_untrained_torch(trained: Any,
                                                                      tmp_path: Path) -> None:
    """The ONNX metadata names lenet_1c1f.pt; a retrained (different) file sits there now."""
    onnx = tmp_path / "lenet_1c1f.onnx"
    shutil.copy(trained.onnx, onnx)
    (tmp_path / "lenet_1c1f.pt").write_bytes(trained.checkpoint.read_bytes() + b"retrained")
    notes: list[str] = []
    target = targets.onnx_target(onnx, notes)
    assert target.checkpoint is None and target.spec == SPEC
    assert any("is not the checkpoint lenet_1c1f.onnx was exported from" in n for n in notes)
