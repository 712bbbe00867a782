"""`cnndeploy data`: where MNIST is found, and downloading it with checksums."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from cnn_deploy.cli import render

app = typer.Typer(help="Find or download the MNIST digits.", no_args_is_help=True)


@app.command()
def download(
    dest: Annotated[Path, typer.Option(help="Folder to download into.")] = Path("data/mnist"),
    mirror: Annotated[str | None, typer.Option(help="Base URL serving the four .gz "
                                               "files.")] = None,
) -> None:
    """Download the four MNIST files and verify their published sha256 checksums."""
    from cnn_deploy.data import DEFAULT_MIRROR, download_mnist

    columns = (TextColumn("{task.description}"), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=render.err, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(name: str, done: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        paths = download_mnist(dest, mirror or DEFAULT_MIRROR, progress=on_progress)
    for path in paths:
        render.out.print(f"verified {path}", highlight=False, soft_wrap=True)


@app.command()
def info(
    data: Annotated[str | None, typer.Option(help="MNIST folder to check.")] = None,
) -> None:
    """Say which MNIST folder is used and what it holds."""
    from cnn_deploy.data import load_mnist

    mnist = load_mnist(data)
    render.out.print(f"{mnist.root}: {len(mnist.train_labels)} training and "
                     f"{len(mnist.test_labels)} test digits, sha256 {mnist.sha256[:16]}...",
                     highlight=False, soft_wrap=True)
