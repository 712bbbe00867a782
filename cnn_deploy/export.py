"""torch -> ONNX: one self-contained file, dynamic batch axis, raw-pixel input, checked.

The input normalisation ``(x / 255 - mean) / std`` is folded into the first convolution
(exact for valid padding), so a camera pipeline feeds raw 0..255 pixels and pays nothing
for it. The file carries metadata props naming the spec, accuracy, source checkpoint and
input contract; after export the opset is checked (the exporter's down-conversion can fail
silently), ``onnx.checker`` runs its full check, and a parity report compares ONNX Runtime
with PyTorch on real test digits.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnn_deploy import __version__
from cnn_deploy.arch import NetSpec
from cnn_deploy.data import MNIST_MEAN, MNIST_STD, PIXEL_MAX, TILE
from cnn_deploy.errors import ModelError
from cnn_deploy.files import wrote
from cnn_deploy.onnxfile import META_PREFIX

if TYPE_CHECKING:
    from torch import nn


DEFAULT_OPSET = 18
# The exporter writes opset 18 and converts: below 15 there is no adapter (Shape), above the
# installed onnx's newest opset there is nothing to convert to.
MIN_OPSET = 15
INPUT_NAME = "tiles"
OUTPUT_NAME = "logits"
INPUT_CONTRACT = {
    "layout": "NCHW",
    "shape": ["batch", 1, TILE, TILE],
    "dtype": "float32",
    "pixel_range": [0.0, PIXEL_MAX],
    "normalisation": f"folded into the graph: (x / {PIXEL_MAX:g} - {MNIST_MEAN}) / {MNIST_STD}",
}


def raw_pixel_module(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that takes raw 0..255 pixels instead of normalised ones.

    With valid padding the affine normalisation folds exactly into the first conv:
    ``W * ((x/255 - m)/s) + b == (W / (255 s)) * x + (b - m/s * sum(W))``. With zero
    padding it would not (padded zeros are not normalised zeros), so an explicit scale
    layer is prepended instead.
    """
    import torch
    from torch import nn

    model = copy.deepcopy(model).eval()
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    scale = 1.0 / (PIXEL_MAX * MNIST_STD)
    shift = -MNIST_MEAN / MNIST_STD
    if first is not None and first.padding in (0, (0, 0)) and first.bias is not None:
        with torch.no_grad():
            first.bias += shift * first.weight.sum(dim=(1, 2, 3))
            first.weight *= scale
        return model
    return nn.Sequential(_make_affine(scale, shift), model)


def _make_affine(scale: float, shift: float) -> nn.Module:
    from torch import nn

    class Affine(nn.Module):
        def forward(self, x: Any) -> Any:
            return x * scale + shift

    return Affine()


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    fp16_path: Path | None


def export_checkpoint(
    checkpoint_path: Path,
    out: Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
) -> ExportResult:
    """Export a checkpoint to ONNX (and optionally an fp16 twin), each checked by
    ``onnx.checker``; the accuracy check against PyTorch is :mod:`cnn_deploy.bench.accuracy`'s."""
    from cnn_deploy.files import file_sha256
    from cnn_deploy.train import load_checkpoint

    spec, model, checkpoint = load_checkpoint(checkpoint_path)
    out = out or checkpoint_path.with_suffix(".onnx")
    meta = {
        "spec": spec.name,
        "spec_json": json.dumps(spec.to_dict()),
        "test_accuracy": str(_dig(checkpoint, "metrics", "test_accuracy")),
        "checkpoint": checkpoint_path.name,
        "checkpoint_sha256": file_sha256(checkpoint_path),
        "dataset_sha256": str(_dig(checkpoint, "dataset", "sha256")),
        "input": json.dumps(INPUT_CONTRACT),
        "exporter": f"cnn_deploy {__version__}",
    }
    return _export_pair(model, out, meta, opset, fp16)


def export_spec(spec: NetSpec, out: Path, *, opset: int = DEFAULT_OPSET, fp16: bool = False,
                seed: int = 0) -> ExportResult:
    """Export an untrained network by name (speed does not depend on the weights; the metadata
    says ``trained: false`` and there is no checkpoint), so any net of the family gets an ONNX
    file, e.g. for a TensorRT engine in a sweep. Seeded: the same name gives the same file."""
    model = spec.build(seed).eval()
    meta = {"spec": spec.name, "spec_json": json.dumps(spec.to_dict()), "trained": "false",
            "input": json.dumps(INPUT_CONTRACT), "exporter": f"cnn_deploy {__version__}"}
    return _export_pair(model, out, meta, opset, fp16)


def _export_pair(model: nn.Module, out: Path, meta: dict[str, str], opset: int,
                 fp16: bool) -> ExportResult:
    """The fp32 file and, with ``fp16``, its ``<name>_fp16.onnx`` twin (fp16 inside)."""
    export_module(raw_pixel_module(model), out, {**meta, "precision": "fp32"}, opset)
    fp16_path = None
    if fp16:
        fp16_path = out.with_name(out.stem + "_fp16.onnx")
        export_module(_half_inside(raw_pixel_module(model)), fp16_path,
                      {**meta, "precision": "fp16"}, opset)
    return ExportResult(out, opset, fp16_path)


def _half_inside(model: nn.Module) -> nn.Module:
    """fp16 weights and arithmetic inside, fp32 tensors at the boundary."""
    from torch import nn

    class HalfInside(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner.half()

        def forward(self, x: Any) -> Any:
            return self.inner(x.half()).float()

    return HalfInside(model)


def check_opset(opset: int) -> int:
    """``opset`` when this exporter can write it, else a ModelError naming the range."""
    import onnx

    newest = int(onnx.defs.onnx_opset_version())
    if not MIN_OPSET <= opset <= newest:
        raise ModelError(f"--opset {opset} cannot be written here: choose {MIN_OPSET}..{newest} "
                         f"(default {DEFAULT_OPSET}; the newest is onnx {onnx.__version__}'s)")
    return opset


def export_module(module: nn.Module, out: Path, metadata: dict[str, str],
                  opset: int = DEFAULT_OPSET) -> Path:
    """Export ``module`` (raw-pixel input) to one ONNX file with a dynamic batch axis."""
    import onnx
    import torch

    check_opset(opset)
    example = torch.rand(2, 1, TILE, TILE) * PIXEL_MAX
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
    with _quiet_exporter():
        program = torch.onnx.export(
            module.eval(), (example,), dynamo=True, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], opset_version=opset, dynamic_shapes=({0: batch},),
            external_data=False, verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise ModelError("the ONNX exporter returned nothing")
    proto = program.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != opset:
        raise ModelError(
            f"asked for opset {opset} but the exporter wrote opset {got} (its version "
            f"conversion failed silently): use --opset {got} or upgrade onnx/onnxscript"
        )
    onnx.helper.set_model_props(proto, {META_PREFIX + k: v for k, v in metadata.items()})
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
        tmp.replace(out)
        wrote(out)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the exported graph failed onnx.checker: {exc}") from None
    except OSError as exc:
        raise ModelError(f"cannot write {out} ({exc.strerror or exc}): free some space or "
                         "choose another --out") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs torchvision absences and deprecations that are not the user's."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _dig(checkpoint: dict[str, Any], *keys: str) -> Any:
    """A nested field a checkpoint of `cnndeploy train` holds; None where it lacks it."""
    value: Any = checkpoint
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def spec_from_metadata(meta: dict[str, str], path: Path | None = None) -> NetSpec | None:
    """The network an export names in its metadata; a name that is no buildable network is
    the file's fault (damaged or edited metadata), and the error says so."""
    if "spec" not in meta:
        return None
    from cnn_deploy.errors import SpecError

    try:
        return NetSpec.from_name(meta["spec"])
    except SpecError as exc:
        where = f"{path}'s" if path is not None else "the ONNX file's"
        raise ModelError(f"{where} cnn_deploy metadata names a network that cannot be built "
                         f"('{meta['spec'][:60]}': {exc}): re-export the file with `cnndeploy "
                         "export`, or strip its cnn_deploy.* metadata to bench it as a foreign "
                         "model") from None
