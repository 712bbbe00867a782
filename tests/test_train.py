"""Training on real digits: accuracy, milestones, early stopping, reproducible checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnn_deploy.arch import NetSpec
from cnn_deploy.data import load_mnist, to_float
from cnn_deploy.errors import ModelError
from cnn_deploy.train import TrainConfig, load_checkpoint, predict, save_checkpoint, train


@pytest.fixture(scope="module")
def mnist():  # type: ignore[no-untyped-def]
    return load_mnist()


@pytest.mark.slow
def test_one_epoch_reaches_95_percent_on_2000_test_digits(mnist, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(epochs=1, batch_size=16, train_subset=30000)
    checkpoint = train(NetSpec.from_name("lenet_1c1f"), mnist, config)
    path = save_checkpoint(checkpoint, tmp_path / "lenet_1c1f.pt")
    spec, model, loaded = load_checkpoint(path)
    x = torch.from_numpy(to_float(mnist.test_images[:2000], normalise=True))
    accuracy = float((predict(model, x).numpy() == mnist.test_labels[:2000]).mean())
    assert accuracy >= 0.95
    assert spec.name == "lenet_1c1f"
    miles = loaded["milestones_seconds"]
    assert set(miles) == {"90%", "95%", "97%"}
    assert miles["90%"] is not None and miles["90%"] <= loaded["metrics"]["train_seconds"]
    assert loaded["dataset"]["sha256"] == mnist.sha256
    assert loaded["dataset"]["train"] == 30000 and loaded["dataset"]["val"] == 5000


def test_same_seed_same_weights(mnist) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(epochs=1, train_subset=600, evals_per_epoch=1, seed=3)
    a = train(NetSpec.from_name("lenet_1c0f"), mnist, config)["state_dict"]
    b = train(NetSpec.from_name("lenet_1c0f"), mnist, config)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_keeps_the_best_epoch(mnist) -> None:  # type: ignore[no-untyped-def]
    # lr 0 never improves after epoch 1: stops after `patience` more epochs
    config = TrainConfig(epochs=10, lr=1e-12, patience=2, train_subset=200, evals_per_epoch=1)
    checkpoint = train(NetSpec.from_name("lenet_1c0f"), mnist, config)
    metrics = checkpoint["metrics"]
    assert metrics["stopped_early"] and metrics["epochs_run"] == 3
    assert metrics["best_epoch"] == 1


def test_checkpoint_that_does_not_match_its_spec(mnist, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    checkpoint = train(NetSpec.from_name("lenet_1c0f"), mnist,
                       TrainConfig(epochs=1, train_subset=100, evals_per_epoch=1))
    checkpoint["spec"] = NetSpec.from_name("lenet_2c0f").to_dict()
    path = save_checkpoint(checkpoint, tmp_path / "x.pt")
    with pytest.raises(ModelError, match=r"do not match its spec lenet_2c0f.*cnndeploy train"):
        load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="not a readable cnn_deploy checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ModelError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    assert np.isfinite(checkpoint["metrics"]["test_accuracy"])
