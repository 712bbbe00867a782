"""`cnndeploy data`: where MNIST is found, and downloading it with checksums."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from cnn_deploy.cli import render

app = typer.Typer(help="Find or download the MNIST digits; make test videos of them.", no_args_is_help=True)


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
def video(
    out: Annotated[Path, typer.Argument(help="digits.mkv (FFV1, lossless), digits.mp4 (H.264 "
                   "with ffmpeg, else MPEG-4) or a folder name (PNG frames).")],
    frames: Annotated[int, typer.Option(help="Frames (each a new set of digits).")] = 300,
    fps: Annotated[float, typer.Option(help="Frame rate written into the file.")] = 30.0,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT.")] = "640x480",
    pitch: Annotated[int, typer.Option(help="Pixels between digit origins (>= 28).")] = 28,
    offset: Annotated[str, typer.Option(help="X,Y of the first digit.")] = "0,0",
    codec: Annotated[str | None, typer.Option(help="ffv1, h264, mp4v or png (default: from "
                     "the suffix).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
    data: Annotated[str | None, typer.Option(help="MNIST folder (else $CNNDEPLOY_DATA, "
                                             "./data/mnist, ../shared/data/mnist).")] = None,
) -> None:
    """A test video for `cnndeploy stream`: MNIST test digits on a grid, ground truth beside it."""
    from cnn_deploy.errors import StreamError
    from cnn_deploy.stream.synth import make_video

    try:
        width, height = (int(v) for v in size.lower().replace(",", "x").split("x"))
    except ValueError:
        raise StreamError(f"--size {size}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    try:
        x, y = (int(v) for v in offset.split(","))
    except ValueError:
        raise StreamError(f"--offset {offset}: expected X,Y, e.g. 14,14") from None
    truth = make_video(out, codec=codec, frames=frames, fps=fps, size=(width, height),
                       pitch=pitch, offset=(x, y), data=data, force=force)
    render.out.print(f"wrote {out} ({frames} frames) and its ground truth {truth}",
                     highlight=False, soft_wrap=True)


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
