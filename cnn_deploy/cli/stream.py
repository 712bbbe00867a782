"""`cnndeploy stream`: frames -> tiles -> batches -> a backend -> labels, timed per stage."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnn_deploy.cli import render

if TYPE_CHECKING:
    from rich.table import Table

    from cnn_deploy.stream.pipeline import StreamRun


def stream(
    source: Annotated[str, typer.Argument(help="A video file, an image or a folder of images, "
                      "/dev/videoN (V4L2), a URL (rtsp://, udp://, tcp://, http://...) or a "
                      "GStreamer pipeline ending in appsink (OpenCV built with GStreamer).")],
    model: Annotated[Path | None, typer.Option(help="An .onnx file or a .pt checkpoint.")] = None,
    engine: Annotated[Path | None, typer.Option(help="A TensorRT plan (`cnndeploy build`); "
                      "needs an NVIDIA GPU.")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="One backend (default: "
                       "onnxruntime for a model, tensorrt for an engine).")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Backend option "
                      "BACKEND.KEY=VALUE, e.g. openvino.hint=throughput.")] = None,
    tile: Annotated[str | None, typer.Option(help="Tile HxW or N (default: the model's input).")]
        = None,
    stride: Annotated[str | None, typer.Option(help="Stride YxX or N (default: the tile: no "
                      "overlap; smaller: a sliding window).")] = None,
    roi: Annotated[str | None, typer.Option(help="Region of interest X,Y,WIDTH,HEIGHT in frame "
                   "pixels.")] = None,
    scale: Annotated[float, typer.Option(help="Resize the ROI by this factor before tiling.")]
        = 1.0,
    pixel_scale: Annotated[float | None, typer.Option(help="Multiply pixels (0..255) by this "
                           "(default: 1 for cnn_deploy models, 1/255 for others).")] = None,
    batch: Annotated[int | None, typer.Option(help="Tiles per batch (default: a whole frame; an "
                     "engine's profile maximum).")] = None,
    fps: Annotated[float | None, typer.Option(help="A camera's rate to request; the pace of "
                   "--realtime.")] = None,
    realtime: Annotated[bool, typer.Option(help="Play a file at its frame rate (late frames "
                        "are dropped, as from a camera) instead of every frame.")] = False,
    frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    deadline_ms: Annotated[float | None, typer.Option(help="Per-frame deadline, capture to "
                           "labels (default: one frame period for a live source).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a network stream to "
                       "open or send a frame.")] = 10.0,
    out: Annotated[Path | None, typer.Option(help="Annotated frames: a video (.mp4, .avi, "
                   ".mkv) or a folder of PNGs.")] = None,
    min_confidence: Annotated[float, typer.Option(help="Tiles below this confidence are greyed "
                              "in --out.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per frame on stdout "
                       "(every tile's x, y, label, confidence); the table goes to stderr.")]
        = False,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Without -o options, run "
                    "the backend with this device's tuned options (`cnndeploy tune`).")] = True,
    force: Annotated[bool, typer.Option(help="Let --out replace an existing video or write "
                     "into a folder that holds files.")] = False,
    bare: Annotated[bool, typer.Option("--bare/--no-bare", help="Time the model bare at the "
                    "same batch afterwards, for the pipeline-vs-bare ratio.")] = True,
    results: Annotated[Path, typer.Option(help="JSONL file the stream record is appended to.")]
        = Path("results/bench.jsonl"),
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not append to results.")] = False,
) -> None:
    """Classify every tile of every frame of a video, camera or stream; time every stage."""
    from cnn_deploy import jobs
    from cnn_deploy.backends import registry
    from cnn_deploy.errors import StreamError
    from cnn_deploy.stream import job as stream_job
    from cnn_deploy.stream.pipeline import StreamConfig

    if (model is None) == (engine is None):
        raise StreamError("give the model: --model FILE (.onnx or .pt) or --engine PLAN"
                          + (", not both" if model is not None else ""))
    from cnn_deploy.stream.classifier import ENGINE_SUFFIXES

    if engine is not None and engine.suffix.lower() not in ENGINE_SUFFIXES:
        raise StreamError(f"--engine {engine}: expected a TensorRT plan ({', '.join(ENGINE_SUFFIXES)}); "
                          "an ONNX file or a checkpoint goes to --model")
    if model is not None and model.suffix.lower() in ENGINE_SUFFIXES:
        raise StreamError(f"--model {model} is a TensorRT engine: pass it as --engine")
    task = stream_job.StreamJob(
        source, model or engine or Path(), backend, registry.parse_options(option), tile, stride,
        roi, scale, pixel_scale, batch,
        StreamConfig(realtime=realtime, fps=fps, max_frames=frames, duration_s=duration,
                     deadline_ms=deadline_ms, bare=bare),
        timeout, out, min_confidence, None if no_save else results, force,
        jobs.tuning_file(tune))
    console = render.err if as_json else render.out
    progress = render.FrameProgress(render.err)

    shown: list[str] = []

    def on_start(started: stream_job.Started) -> None:
        render.note(f"{started.source.kind} {started.source.text} -> {started.model} on "
                    f"{started.backend}")
        for line in started.notes:
            render.note(line)
        shown.extend(started.notes)
        progress.start(started.source.frames if not started.source.live else None)

    terminated: list[int] = []

    def on_term(signum: int, frame: Any) -> None:  # `docker stop`, `timeout`: end as Ctrl-C does
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        run = stream_job.run(task, jsonl=sys.stdout if as_json else None, on_start=on_start,
                             on_frame=progress.update)
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.stop()
    console.print(stream_table(run))
    console.print(stage_table(run))
    for line in run.notes[len(shown):]:  # the notes from loading were shown at the start
        render.note(line)
    if run.record is not None:
        render.note(f"stream record appended to {results}")
    if run.interrupted:
        why = "terminated (SIGTERM)" if terminated else "interrupted"
        render.note(f"{why} after {run.frames} frames: the table and the record cover them")
        raise typer.Exit(143 if terminated else 130)
    if run.ended.startswith("source error"):
        render.error(f"the source broke: {run.ended}; the frames before it are in the table"
                     + (" and the record" if run.record is not None else ""))
        raise typer.Exit(1)


def stream_table(run: StreamRun) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{escape(run.model)} on {escape(run.backend)}", title_justify="left",
                  caption=f"{run.source.kind}: {escape(run.source.text)}", caption_justify="left",
                  show_header=False, min_width=60)
    table.add_column("what")
    table.add_column("value", justify="right")
    grid = run.grid
    per_frame = f"{grid['rows']}x{grid['cols']} = {grid['rows'] * grid['cols']}" if grid else "-"
    if len(run.frame_sizes) > 1:
        per_frame = f"varies (mean {run.tiles / max(run.frames, 1):.0f})"
    rows = [("frames", f"{run.frames}"), ("tiles per frame", per_frame),
            ("batch", f"{run.batch}"), ("fps sustained", f"{run.fps:.1f}"),
            ("tiles/ms in the pipeline", f"{run.tiles_per_ms:.2f}")]
    if run.bare is not None:
        rows.append((f"tiles/ms bare (bench, batch {run.batch})", f"{run.bare.tiles_per_ms:.2f}"))
        rows.append(("pipeline / bare", "- (the source sets the pace)" if run.paced
                     else f"{run.ratio:.0%}" if run.ratio is not None else "-"))
    rows.append(("dropped frames", f"{run.dropped}"))
    deadline = f" (> {run.deadline_ms:.1f} ms)" if run.deadline_ms is not None else " (no deadline)"
    rows.append((f"deadline misses{deadline}", f"{run.misses}"))
    rows.append(("ended", escape(run.ended)))
    for what, value in rows:
        table.add_row(what, value)
    return table


def stage_table(run: StreamRun) -> Table:
    from rich.table import Table

    table = Table(title="per frame (ms)", title_justify="left")
    for column in ("stage", "median", "p90", "p99"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for name, s in run.stage_stats().items():
        table.add_row(name, f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}")
    return table


def register(app: typer.Typer) -> None:
    app.command()(stream)
