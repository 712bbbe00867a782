"""``cnndeploy stream`` as one library call: check every input, open the source and the model,
run the pipeline into the sinks, append the record. The CLI parses and renders around it.

Order matters: everything a user can get wrong (options, ROI, tile, stride, output paths, the
results file) is checked before the source or the model is opened, and both are opened before
the first frame is read, so a mistake costs nothing and a run's record is never lost.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cnn_deploy.errors import StreamError
from cnn_deploy.results.records import Writer
from cnn_deploy.stream.classifier import ENGINE_SUFFIXES, TileClassifier
from cnn_deploy.stream.pipeline import StreamConfig, StreamRun, run_stream
from cnn_deploy.stream.sinks import AnnotatedSink, JsonlSink, Sink, check_out
from cnn_deploy.stream.sources import (
    DEFAULT_TIMEOUT_S,
    Source,
    SourceInfo,
    classify_text,
    open_source,
)
from cnn_deploy.stream.tiling import Roi, TilingConfig, parse_pair


@dataclass(frozen=True)
class StreamJob:
    source: str
    model: Path  # .onnx, .pt or a TensorRT plan
    backend: str | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    tile: str | None = None
    stride: str | None = None
    roi: str | None = None
    scale: float = 1.0
    pixel_scale: float | None = None
    batch: int | None = None
    config: StreamConfig = StreamConfig()
    timeout_s: float = DEFAULT_TIMEOUT_S
    out: Path | None = None
    min_confidence: float = 0.5
    results: Path | None = None
    force: bool = False  # --out may replace an existing video or a folder's frames
    tuning: Path | None = None  # this device's tuning file: options for a backend given none

    def tiling(self) -> TilingConfig:
        return TilingConfig(tile=parse_pair(self.tile, "--tile") if self.tile else None,
                            stride=parse_pair(self.stride, "--stride") if self.stride else None,
                            roi=Roi.parse(self.roi) if self.roi else None, scale=self.scale,
                            pixel_scale=self.pixel_scale)

    def check(self) -> None:
        """Every number and path, before anything is opened."""
        c = self.config
        positive = {"--scale": self.scale, "--timeout": self.timeout_s, "--fps": c.fps,
                    "--duration": c.duration_s, "--deadline-ms": c.deadline_ms,
                    "--pixel-scale": self.pixel_scale}
        for flag, value in positive.items():
            if value is not None and (not math.isfinite(value) or value <= 0):
                raise StreamError(f"{flag} {value}: must be a positive number")
        limits = {"--timeout": (self.timeout_s, 3600.0), "--pixel-scale": (self.pixel_scale, 1e6),
                  "--scale": (self.scale, 100.0)}
        for flag, (value, top) in limits.items():
            if value is not None and value > top:
                raise StreamError(f"{flag} {value:g}: at most {top:g}")
        if c.realtime and c.fps is not None and c.fps < 0.1:
            raise StreamError(f"--fps {c.fps:g} with --realtime is one frame every "
                              f"{1 / c.fps:,.0f} s: give at least 0.1")
        if c.max_frames is not None and c.max_frames < 1:
            raise StreamError(f"--frames {c.max_frames}: must be at least 1")
        if self.batch is not None and self.batch < 1:
            raise StreamError(f"--batch {self.batch}: must be at least 1")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise StreamError(f"--min-confidence {self.min_confidence}: must be within 0..1")
        suffix = self.model.suffix.lower()
        if suffix not in (".onnx", ".pt", *ENGINE_SUFFIXES):
            raise StreamError(f"{self.model}: expected an .onnx file, a .pt checkpoint or a "
                              f"TensorRT engine ({', '.join(ENGINE_SUFFIXES)})")
        if suffix in ENGINE_SUFFIXES and not self.model.is_file():
            raise StreamError(f"no engine at {self.model}: build one with `cnndeploy build "
                              "models/<net>.onnx` (engines/<device>/<net>_<precision>.plan)")
        if not self.model.is_file():
            raise StreamError(f"no model at {self.model}: export one with `cnndeploy export` "
                              "(or build an engine with `cnndeploy build`)")
        self.tiling()
        if self.out is not None:
            check_out(self.out, source=self.source, force=self.force)


@dataclass
class Started:
    """What the CLI shows before the first frame: the source and the model as opened."""

    source: SourceInfo
    model: str
    backend: str
    notes: list[str]


def run(job: StreamJob, *, jsonl: TextIO | None = None,
        on_start: Callable[[Started], None] | None = None,
        on_frame: Callable[[StreamRun], None] | None = None) -> StreamRun:
    """Run ``job``; per-frame labels to ``jsonl`` (when given); the record to ``job.results``."""
    from cnn_deploy.backends import registry

    job.check()
    options = registry.check_options(job.options)
    writer = Writer(job.results) if job.results is not None else None
    # a file is opened first (a bad one costs nothing); a live source after the model has
    # loaded, so that it does not buffer or overrun while an engine deserialises
    live = classify_text(job.source) in ("camera", "network", "gstreamer")
    source: Source | None = None if live else open_source(job.source)
    with contextlib.ExitStack() as stack:
        if source is not None:
            stack.callback(source.close)
        backend = registry.get(job.backend).name if job.backend else None
        engine = job.model.suffix.lower() in ENGINE_SUFFIXES
        if backend is None and len(options) == 1 and not engine:
            backend = next(iter(options))  # -o openvino.hint=... alone picks OpenVINO
        others = sorted(set(options) - {backend})
        if others:
            raise StreamError(f"stream runs one backend: options for {', '.join(others)} need "
                              f"-b {others[0]} (one backend per run)")
        tuned_notes: list[str] = []
        if job.tuning is not None and not options:
            from cnn_deploy.bench.tune import apply
            from cnn_deploy.stream.classifier import default_backend

            chosen = backend or default_backend(engine)
            tuned, tuned_notes = apply({}, [chosen], job.tuning)
            options = {chosen: tuned[chosen]} if chosen in tuned else {}
        options_for = options.get(backend, {}) if backend else {}
        if backend is None and len(options) == 1:
            backend, options_for = next(iter(options.items()))
        classifier = stack.enter_context(TileClassifier.from_path(
            job.model, backend=backend, options=options_for, tiling=job.tiling(), batch=job.batch))
        if source is None:
            source = open_source(job.source, timeout_s=job.timeout_s, fps=job.config.fps)
            stack.callback(source.close)
        sinks: list[Sink] = []
        if jsonl is not None:
            sinks.append(JsonlSink(jsonl))
        if job.out is not None:
            sinks.append(AnnotatedSink(job.out, source.info.fps or job.config.fps, job.min_confidence))
        classifier.notes[:0] = tuned_notes
        if on_start is not None:
            on_start(Started(source.info, classifier.name, classifier.runner.label, classifier.notes))
        return run_stream(source, classifier, job.config, sinks, writer=writer, on_frame=on_frame)
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the with block returns)
