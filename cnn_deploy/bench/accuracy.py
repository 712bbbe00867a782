"""The one accuracy check: a runner's top-1 on real test digits against the labels and
against PyTorch (the reference), with the largest logit difference.

Used by export (ONNX Runtime vs the checkpoint) and by engines (TensorRT vs the same
network in PyTorch): both runners come from the registry and take raw 0..255 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Runner, Target
from cnn_deploy.data import Mnist, to_float
from cnn_deploy.errors import BenchError

DEFAULT_TILES = 2000


@dataclass(frozen=True)
class Agreement:
    """A runner against PyTorch on the same real test digits."""

    tiles: int
    max_abs_error: float  # largest |logit difference|
    top1_agreement: float  # share of tiles where both pick the same class
    accuracy: float  # the runner's top-1 accuracy on the labels
    reference_accuracy: float  # PyTorch's

    @property
    def delta(self) -> float:
        return self.accuracy - self.reference_accuracy


def reference_options() -> dict[str, object]:
    """PyTorch eager fp32 on the CPU, NCHW: the reference every backend is compared with."""
    return registry.baseline_backend().baseline("cpu")  # type: ignore[misc]


def check_agreement(target: Target, backend: str, data: Mnist, *, options: dict[str, object]
                    | None = None, tiles: int = DEFAULT_TILES, batch: int = 256,
                    unfolded: bool = False) -> Agreement:
    """Classify the first ``tiles`` test digits with ``backend`` and with PyTorch.

    The reference is the deployed network in PyTorch (raw pixels, normalisation folded into
    the first conv) or, with ``unfolded``, the checkpoint's own module on normalised pixels:
    what export checks, so that an error in the folding shows."""
    if target.spec is None:
        raise BenchError(f"{target.name} names no cnn_deploy network: no PyTorch reference")
    runner = registry.runner(backend, target, dict(options or {}))
    if unfolded:
        if target.checkpoint is None:
            raise BenchError(f"{target.name} has no checkpoint: no unfolded reference")
        return agreement(runner, _UnfoldedCheckpoint(target.checkpoint), data, tiles=tiles,
                         batch=batch)
    reference = registry.baseline_backend().name
    return agreement(runner, registry.runner(reference, target, reference_options()), data,
                     tiles=tiles, batch=batch)


class _UnfoldedCheckpoint:
    """The checkpoint's module as trained: normalised pixels in (not a backend, a reference)."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint

    def logits(self, images: np.ndarray) -> np.ndarray:
        import torch

        from cnn_deploy.data import MNIST_MEAN, MNIST_STD, PIXEL_MAX
        from cnn_deploy.train import load_checkpoint

        model = load_checkpoint(self.checkpoint)[1].eval()
        normalised = ((images / np.float32(PIXEL_MAX)) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
        with torch.inference_mode():
            return np.asarray(model(torch.from_numpy(normalised.astype(np.float32))).numpy())


def agreement(runner: Runner, reference: Runner | _UnfoldedCheckpoint, data: Mnist, *,
              tiles: int = DEFAULT_TILES, batch: int = 256) -> Agreement:
    """Classify the first ``tiles`` test digits (raw 0..255 pixels) with both."""
    if tiles < 1:
        raise BenchError(f"the accuracy check needs at least 1 tile, got {tiles}")
    images = to_float(data.test_images[:tiles], normalise=False)
    labels = data.test_labels[:len(images)]
    got = logits(runner, images, batch)
    want = (reference.logits(images) if isinstance(reference, _UnfoldedCheckpoint)
            else logits(reference, images, batch))
    return Agreement(len(images), float(np.max(np.abs(got.astype(np.float64) - want))),
                     float(np.mean(got.argmax(1) == want.argmax(1))),
                     float(np.mean(got.argmax(1) == labels)),
                     float(np.mean(want.argmax(1) == labels)))


def logits(runner: Runner, images: np.ndarray, batch: int) -> np.ndarray:
    """The runner's logits in batches of its fixed batch or ``batch``; the last batch is padded
    by repeating tiles, so it stays inside an engine's optimisation profile."""
    with runner:
        size = runner.signature.fixed_batch or min(batch, len(images))
        limits = runner.batch_limits()
        if limits is not None:
            size = min(max(size, limits[0]), limits[1])
        dtype = np.dtype(runner.signature.dtype)
        out = []
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            padded = np.resize(chunk, (size, *chunk.shape[1:])) if len(chunk) < size else chunk
            got = runner.infer(np.ascontiguousarray(padded, dtype=dtype))
            out.append(np.asarray(got, dtype=np.float32)[:len(chunk)])
    return np.concatenate(out)
