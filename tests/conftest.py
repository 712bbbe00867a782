"""Shared fixtures: the real MNIST folder, one small trained checkpoint and its ONNX export.

Training and exporting are the slow steps, so they happen once per session and every test
reuses the files (tests that need to damage them copy them first).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")

# cnn_deploy reads $CNNDEPLOY_DATA wherever --data is not given (train, export, bench inputs).
os.environ.setdefault("CNNDEPLOY_DATA", str(MNIST_DIR))
DATA = Path(os.environ["CNNDEPLOY_DATA"])


def mnist_present(folder: Path = DATA) -> bool:
    return all((folder / f"{stem}.gz").is_file() or (folder / stem).is_file()
               for stem in MNIST_STEMS)


NO_DATA_REASON = f"real MNIST files not found in {DATA} (set $CNNDEPLOY_DATA)"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST folder; tests that need it skip where it is absent."""
    if not mnist_present():
        pytest.skip(NO_DATA_REASON)
    return DATA


# -- markers -------------------------------------------------------------------
def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or a broken install raising anything else
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    checks = {
        "gpu": (_cuda_available, "needs an NVIDIA GPU"),
        "tensorrt": (_tensorrt_importable, "needs TensorRT (`import tensorrt` fails)"),
    }
    results: dict[str, bool] = {}
    for item in items:
        for marker, (check, reason) in checks.items():
            if marker not in item.keywords:
                continue
            if marker not in results:  # probe lazily: only when such a test is collected
                results[marker] = check()
            if not results[marker]:
                item.add_marker(pytest.mark.skip(reason=reason))


# -- the one small model every test reuses ------------------------------------
@dataclass(frozen=True)
class Trained:
    checkpoint: Path  # lenet_1c1f.pt, 1 epoch on 3000 digits
    onnx: Path  # lenet_1c1f.onnx beside it (its metadata names the checkpoint)
    data: Any  # the loaded cnn_deploy.data.Mnist


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> Any:
    from cnn_deploy.data import load_mnist

    return load_mnist(mnist_dir)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, mnist: Any) -> Trained:
    """`cnndeploy train lenet_1c1f --epochs 1 --subset 3000` + `cnndeploy export`, once."""
    from cnn_deploy.arch import NetSpec
    from cnn_deploy.export import export_checkpoint
    from cnn_deploy.train import TrainConfig, save_checkpoint, train

    folder = tmp_path_factory.mktemp("models")
    checkpoint = train(NetSpec.from_name("lenet_1c1f"), mnist,
                       TrainConfig(epochs=1, train_subset=3000))
    path = save_checkpoint(checkpoint, folder / "lenet_1c1f.pt")
    exported = export_checkpoint(path)
    return Trained(path, exported.path, mnist)
