"""`cnndeploy train`: SGD on MNIST with early stopping and time-to-accuracy milestones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cnn_deploy.cli import render


def train(
    net: Annotated[str, typer.Argument(help="Network name, e.g. lenet_3c1f.")],
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping may end "
                                        "sooner).")] = 10,
    lr: Annotated[float, typer.Option(help="SGD learning rate (thesis: 0.03).")] = 0.03,
    momentum: Annotated[float, typer.Option(help="SGD momentum (thesis: none).")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Training mini-batch.")] = 32,
    patience: Annotated[int, typer.Option(help="Epochs without a better validation "
                                          "accuracy before stopping.")] = 3,
    subset: Annotated[int | None, typer.Option(help="Train on only the first N digits "
                                               "(smoke runs).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for weights, split and order.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Checkpoint path (default "
                                             "models/<net>.pt).")] = None,
    data: Annotated[str | None, typer.Option(help="MNIST folder (else $CNNDEPLOY_DATA, "
                                             "./data/mnist, ../shared/data/mnist).")] = None,
) -> None:
    """Train a network on MNIST and save a checkpoint with its metrics."""
    import math

    from cnn_deploy.arch import NetSpec
    from cnn_deploy.data import load_mnist
    from cnn_deploy.errors import ModelError, SpecError
    from cnn_deploy.files import check_output
    from cnn_deploy.train import TrainConfig, save_checkpoint

    spec = NetSpec.from_name(net)
    if epochs < 1 or batch_size < 1:
        raise SpecError(f"--epochs and --batch-size must be at least 1, got {epochs} and "
                        f"{batch_size}")
    if not (math.isfinite(lr) and lr > 0):
        raise SpecError(f"--lr must be a positive number (thesis: 0.03), got {lr}")
    if not 0 <= momentum < 1:
        raise SpecError(f"--momentum must be within [0, 1) (0: plain SGD), got {momentum}")
    if patience < 1:
        raise SpecError(f"--patience must be at least 1 epoch, got {patience}")
    if subset is not None and subset < 100:
        raise SpecError(f"--subset takes at least 100 training digits, got {subset}")
    out = check_output(out or Path("models") / f"{spec.name}.pt", ".pt", "--out", ModelError)
    mnist = load_mnist(data)
    config = TrainConfig(epochs=epochs, lr=lr, momentum=momentum, batch_size=batch_size,
                         patience=patience, train_subset=subset, seed=seed)
    checkpoint = run_with_progress(spec, mnist, config)
    path = save_checkpoint(checkpoint, out)
    show_summary(checkpoint, path)


def run_with_progress(spec: Any, mnist: Any, config: Any) -> dict[str, Any]:
    from cnn_deploy.train import train as run_training

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=render.err, transient=True) as bar:
        task = bar.add_task(f"{spec.name} epoch 1", total=None, info="")
        last_acc: list[float] = []

        def on_step(p: Any) -> None:
            if p.val_accuracy is not None:
                last_acc[:] = [p.val_accuracy]
            acc = f" val {last_acc[0]:.2%}" if last_acc else ""
            bar.update(task, description=f"{spec.name} epoch {p.epoch}", total=p.steps_per_epoch,
                       completed=p.step, info=f"loss {p.loss:.3f}{acc}")

        return run_training(spec, mnist, config, on_step)


def show_summary(checkpoint: dict[str, Any], path: Path) -> None:
    m = checkpoint["metrics"]
    miles = ", ".join(f"{k} in {v:.1f} s" if v is not None else f"{k} not reached"
                      for k, v in checkpoint["milestones_seconds"].items())
    stopped = " (stopped early)" if m["stopped_early"] else ""
    render.out.print(f"[bold]{checkpoint['spec']['name']}[/]: test accuracy "
                     f"{m['test_accuracy']:.2%}, best validation {m['val_accuracy']:.2%} at epoch "
                     f"{m['best_epoch']} of {m['epochs_run']}{stopped}; "
                     f"{m['train_seconds']:.1f} s of training", highlight=False, soft_wrap=True)
    render.out.print(f"time to validation accuracy (thesis Table 2): {miles}",
                     highlight=False, soft_wrap=True)
    render.out.print(f"saved {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(train)
