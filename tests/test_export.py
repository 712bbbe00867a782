"""Export: folded normalisation, dynamic batch, metadata, checker, parity on real digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cnn_deploy.arch import NetSpec
from cnn_deploy.backends.ort import OrtRunner
from cnn_deploy.data import load_mnist, to_float
from cnn_deploy.errors import ModelError
from cnn_deploy.export import export_module, raw_pixel_module
from cnn_deploy.jobs import export as export_checkpoint
from cnn_deploy.onnxfile import read_metadata
from cnn_deploy.train import TrainConfig, save_checkpoint, train


@pytest.fixture(scope="module")
def mnist():  # type: ignore[no-untyped-def]
    return load_mnist()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, mnist):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("export")
    checkpoint = train(NetSpec.from_name("lenet_2c1f"), mnist,
                       TrainConfig(epochs=1, train_subset=3000, evals_per_epoch=1))
    path = save_checkpoint(checkpoint, folder / "lenet_2c1f.pt")
    return export_checkpoint(path, data=mnist, fp16=True, parity_tiles=1000), path


@pytest.mark.parametrize("name", ["lenet_1c1f", "lenet_2c1f_k3_p1"])
def test_folding_the_normalisation_is_exact(name: str, mnist) -> None:  # type: ignore[no-untyped-def]
    model = NetSpec.from_name(name).build().eval()
    raw = torch.from_numpy(to_float(mnist.test_images[:64], normalise=False))
    normalised = torch.from_numpy(to_float(mnist.test_images[:64], normalise=True))
    with torch.no_grad():
        expected = model(normalised)
        got = raw_pixel_module(model)(raw)
    assert torch.allclose(got, expected, atol=1e-4)


def test_export_writes_one_checked_file_with_a_dynamic_batch(exported) -> None:  # type: ignore[no-untyped-def]
    result, _ = exported
    proto = onnx.load(str(result.path))
    onnx.checker.check_model(proto, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert list(result.path.parent.glob("*.data")) == []
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    meta = read_metadata(result.path)
    assert meta["spec"] == "lenet_2c1f"
    assert float(meta["test_accuracy"]) > 0.5
    assert len(meta["checkpoint_sha256"]) == 64
    contract = json.loads(meta["input"])
    assert contract["pixel_range"] == [0.0, 255.0] and "folded" in contract["normalisation"]


def test_onnxruntime_matches_torch_on_real_digits(exported, mnist) -> None:  # type: ignore[no-untyped-def]
    result, _ = exported
    assert result.parity.max_abs_error < 1e-4
    assert result.parity.top1_agreement == 1.0
    assert result.parity.tiles == 1000
    with OrtRunner(result.path) as runner:  # any batch size runs
        for n in (1, 37):
            x = to_float(mnist.test_images[:n], normalise=False)
            assert runner.infer(x).shape == (n, 10)


def test_fp16_graph_is_fp16_inside_and_agrees(exported) -> None:  # type: ignore[no-untyped-def]
    result, _ = exported
    proto = onnx.load(str(result.fp16_path))
    dtypes = {t.data_type for t in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes and onnx.TensorProto.FLOAT not in dtypes
    assert read_metadata(result.fp16_path)["precision"] == "fp16"
    if result.fp16_parity is not None:  # ORT CPU may lack fp16 kernels: then a note says so
        assert result.fp16_parity.top1_agreement > 0.99
    else:
        assert result.fp16_note


def test_an_opset_the_exporter_cannot_write_is_caught(tmp_path: Path) -> None:
    model = NetSpec().build()
    with pytest.raises(ModelError, match="opset"):
        export_module(model, tmp_path / "x.onnx", {}, opset=7)
    assert not (tmp_path / "x.onnx").exists()


def test_wrong_input_is_refused_with_the_contract(exported) -> None:  # type: ignore[no-untyped-def]
    from cnn_deploy.errors import BenchError

    result, _ = exported
    with OrtRunner(result.path) as runner, pytest.raises(BenchError, match=r"\(N, 1, 28, 28\)"):
        runner.infer(np.zeros((2, 3, 28, 28), np.float32))


def test_the_export_check_would_catch_a_wrong_folding(exported, mnist, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The reference is the checkpoint's own module on normalised pixels, not the folded one:
    an ONNX file without the folding (expects normalised input) must disagree."""
    from cnn_deploy.backends.base import Target
    from cnn_deploy.bench.accuracy import check_agreement
    from cnn_deploy.train import load_checkpoint

    _, checkpoint = exported
    spec, model, _ = load_checkpoint(checkpoint)
    unfolded = export_module(model, tmp_path / "unfolded.onnx", {"spec": spec.name})
    target = Target(spec.name, unfolded, spec, checkpoint, True)
    bad = check_agreement(target, "onnxruntime", mnist, tiles=200, unfolded=True)
    assert bad.max_abs_error > 1.0 and bad.top1_agreement < 1.0
