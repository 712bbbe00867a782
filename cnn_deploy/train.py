"""SGD training as in the thesis (lr 0.03), early stopping, time-to-accuracy milestones.

The checkpoint is a plain dict that ``torch.load(weights_only=True)`` can read: the spec,
the weights, metrics, the thesis Table 2 milestones and the dataset's hash.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnn_deploy import __version__
from cnn_deploy.arch import NetSpec
from cnn_deploy.errors import ModelError, SpecError
from cnn_deploy.files import wrote

if TYPE_CHECKING:
    import torch
    from torch import nn

    from cnn_deploy.data import Mnist

CHECKPOINT_FORMAT = "cnn_deploy.checkpoint/1"
MILESTONES = (0.90, 0.95, 0.97)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 0.03
    momentum: float = 0.0
    batch_size: int = 32
    patience: int = 3  # epochs without a better validation accuracy before stopping
    val_size: int = 5000
    evals_per_epoch: int = 5  # validation checks per epoch, for the milestone resolution
    train_subset: int | None = None  # use only the first N training digits (tests, smoke runs)
    seed: int = 0
    threads: int | None = None


@dataclass
class TrainProgress:
    """What the library reports to a progress bar after each step."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    val_accuracy: float | None


ProgressCallback = Callable[[TrainProgress], None]


def train(
    spec: NetSpec,
    data: Mnist,
    config: TrainConfig = TrainConfig(),
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Train ``spec`` on ``data``; returns the checkpoint dict (see :func:`save_checkpoint`)."""
    import torch

    from cnn_deploy.data import split_train_val, to_float

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    train_idx, val_idx = split_train_val(len(data.train_labels), config.val_size, config.seed)
    if config.train_subset is not None:
        train_idx = train_idx[: config.train_subset]
    x_train = torch.from_numpy(to_float(data.train_images[train_idx], normalise=True))
    y_train = torch.from_numpy(data.train_labels[train_idx].astype(np.int64))
    x_val = torch.from_numpy(to_float(data.train_images[val_idx], normalise=True))
    y_val = torch.from_numpy(data.train_labels[val_idx].astype(np.int64))

    model = spec.build()
    optimiser = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(config.seed)
    steps = max(1, len(x_train) // config.batch_size)
    eval_every = max(1, steps // max(1, config.evals_per_epoch))

    history: list[dict[str, float]] = []
    milestones: dict[str, float | None] = {f"{m:.0%}": None for m in MILESTONES}
    best_acc, best_state, best_epoch, stale = -1.0, copy.deepcopy(model.state_dict()), 0, 0
    train_seconds = 0.0
    epochs_run = 0
    for epoch in range(1, config.epochs + 1):
        epochs_run = epoch
        order = torch.randperm(len(x_train), generator=generator)
        running = 0.0
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            start = time.perf_counter()
            loss = _train_step(model, optimiser, x_train[idx], y_train[idx])
            train_seconds += time.perf_counter() - start
            running = loss if step == 0 else 0.98 * running + 0.02 * loss
            val_acc = None
            if (step + 1) % eval_every == 0 or step == steps - 1:
                val_acc = evaluate(model, x_val, y_val)
                history.append({"epoch": epoch, "step": step + 1, "train_seconds": train_seconds,
                                "loss": running, "val_accuracy": val_acc})
                for m in MILESTONES:
                    key = f"{m:.0%}"
                    if milestones[key] is None and val_acc >= m:
                        milestones[key] = train_seconds
            if progress is not None:
                progress(TrainProgress(epoch, step + 1, steps, running, val_acc))
        epoch_acc = history[-1]["val_accuracy"]
        if epoch_acc > best_acc:
            best_acc, best_state, best_epoch, stale = epoch_acc, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    x_test = torch.from_numpy(to_float(data.test_images, normalise=True))
    y_test = torch.from_numpy(data.test_labels.astype(np.int64))
    test_acc = evaluate(model, x_test, y_test)
    return {
        "format": CHECKPOINT_FORMAT,
        "spec": spec.to_dict(),
        "state_dict": model.state_dict(),
        "metrics": {
            "test_accuracy": test_acc,
            "val_accuracy": best_acc,
            "best_epoch": best_epoch,
            "epochs_run": epochs_run,
            "stopped_early": epochs_run < config.epochs,
            "train_seconds": train_seconds,
            "history": history,
        },
        "milestones_seconds": milestones,
        "dataset": {"root": str(data.root), "sha256": data.sha256,
                    "train": len(train_idx), "val": len(val_idx), "test": len(y_test)},
        "config": asdict(config),
        "versions": {"cnn_deploy": __version__, "torch": str(torch.__version__)},
    }


def _train_step(model: nn.Module, optimiser: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor) -> float:
    import torch.nn.functional as F

    model.train()
    optimiser.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimiser.step()
    return float(loss.item())


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on normalised tiles ``x``."""
    return float((predict(model, x, batch) == y).float().mean().item())


def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    import torch

    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


# -- checkpoints ---------------------------------------------------------------
def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> Path:
    """Write atomically: a temporary file beside ``path``, renamed into place; nothing is left
    behind when the write fails (a full disk, a folder in the way)."""
    import torch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, tmp)
        tmp.replace(path)
        wrote(path)
    except (OSError, RuntimeError) as exc:  # torch.save wraps some OS errors in RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ModelError(f"cannot write the checkpoint to {path} ({_first_line(exc)}): free some "
                         "space or choose another --out") from None
    return path


def load_checkpoint(path: Path) -> tuple[NetSpec, nn.Module, dict[str, Any]]:
    """Load a checkpoint; its weights must match its spec."""
    import pickle

    import torch

    if not path.is_file():
        raise ModelError(f"no checkpoint at {path}: train one with `cnndeploy train <net>`")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, KeyError,
            IndexError, TypeError, AttributeError) as exc:  # garbage makes the unpickler fail anyhow
        raise ModelError(
            f"{path} is not a readable cnn_deploy checkpoint ({_load_reason(exc)}): "
            "retrain it with `cnndeploy train <net>`"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a cnn_deploy checkpoint (no '{CHECKPOINT_FORMAT}' "
                         "format tag): train one with `cnndeploy train <net>`")
    missing = [k for k in ("spec", "state_dict") if k not in checkpoint]
    if missing:
        raise ModelError(f"{path} lacks its {' and '.join(missing)}: it is damaged or was not "
                         "written by `cnndeploy train`; retrain it with `cnndeploy train <net>`")
    try:
        spec = NetSpec.from_dict(checkpoint["spec"])
    except SpecError as exc:
        raise ModelError(f"{path} holds a spec that cannot be built ({exc}): retrain it with "
                         "`cnndeploy train <net>`") from None
    model = spec.build()
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        detail = "; ".join(lines)[:300] or _first_line(exc)
        raise ModelError(
            f"the weights in {path} do not match its spec {spec.name} "
            f"({detail}): retrain with `cnndeploy train {spec.name}`"
        ) from None
    model.eval()
    return spec, model, checkpoint


def _load_reason(exc: BaseException) -> str:
    import re

    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if match:
        return f"it pickles {match.group(1)}, which a weights-only load refuses"
    return f"{type(exc).__name__}: {_first_line(exc)[:200]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
