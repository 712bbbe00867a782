"""A source through a :class:`TileClassifier` to the sinks, timed per stage and per frame.

Capture (read + decode) and tiling run ahead of inference in a capture thread where inference
leaves a core idle (a GPU backend) and for every live source (it must be drained as frames
come: the newest wins); on a CPU backend reading a file they run inline between inferences,
because the backend's threads already use every core and a thread would only compete with them
(on 2 cores it cost ~25 % of the tiles/ms; inline costs the read and the cut, ~10 %).
Every frame keeps its own stage times (ms): ``capture`` (read and decode; for a live source
also the wait for the frame), ``tile`` (crop, colour, cut), ``wait`` (frame ready -> inference
starts), ``stage`` (the input handed to the backend), ``infer`` (run + synchronise), ``d2h``
(outputs to numpy), ``post`` (softmax, top-1) and ``sink`` (JSONL, annotated frames);
``latency`` runs from the read (a file) or the frame's arrival (a live source) to the sinks
done. This is MLPerf's ``frame`` scenario: N tiles per frame within a deadline.

The first frame is read and run once before the clock starts (a deployment warms up too).
The run ends at the source's end, a frame or time limit, Ctrl-C (``interrupted``), or a source that
breaks mid-run (``ended`` says why); in every case the frames done are summarised and, with a
writer, the ``kind: "stream"`` record is appended before anything is rendered. Then the same
runner is timed bare at the same batch by the one harness, for the pipeline-vs-bare ratio.
A source that gives no frame at all is an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn_deploy.bench.timing import Stats, TimingConfig, summarise, time_runner
from cnn_deploy.errors import CnnDeployError, StreamError
from cnn_deploy.results.records import Writer
from cnn_deploy.stream.classifier import TileClassifier
from cnn_deploy.stream.sinks import Sink
from cnn_deploy.stream.sources import Capture, Captured, Source, SourceInfo

STAGES = ("capture", "tile", "wait", "stage", "infer", "d2h", "post", "sink")
# A live read that waits longer than this is a stall (the sender paused or stopped; FFmpeg
# flushes its last frames after --timeout): its wait is left out of the sustained fps.
STALL_MS = 1000.0
BARE_TIMING = TimingConfig(warmup_ms=100.0, min_duration_ms=1000.0, min_iterations=10)


@dataclass(frozen=True)
class StreamConfig:
    realtime: bool = False  # pace a file at its frame rate (then it is live: late frames drop)
    fps: float | None = None  # a camera's requested rate, or the pace of --realtime
    max_frames: int | None = None
    duration_s: float | None = None
    deadline_ms: float | None = None  # default: one frame period for a live source
    depth: int = 4  # frames the capture thread may run ahead
    # capture and tiling in their own thread: None = where inference leaves a core idle (a GPU
    # backend) and for live sources; on a CPU backend a thread only competes for the cores
    capture_thread: bool | None = None
    bare: bool = True  # time the runner bare at the same batch after the stream
    bare_timing: TimingConfig = BARE_TIMING


@dataclass
class StreamRun:
    """What a stream did: counts, per-frame stage samples, and why it ended."""

    source: SourceInfo
    model: str
    backend: str  # the runner's label
    backend_name: str
    options: dict[str, Any]
    deadline_ms: float | None
    frames: int = 0
    tiles: int = 0
    batch: int = 0
    grid: dict[str, Any] = field(default_factory=dict)
    dropped: int = 0
    unreadable: int = 0
    misses: int = 0
    wall_ms: float = 0.0
    stages_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    latency_ms: list[float] = field(default_factory=list)
    ended: str = "end of source"
    interrupted: bool = False
    bare: Stats | None = None
    bare_samples_ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    capture: str = ""  # thread or inline
    paced: bool = False  # a live source or --realtime: the source, not the pipeline, sets the rate
    stalled_ms: float = 0.0  # live reads that waited over STALL_MS: not in wall_ms
    frame_sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) seen, in order

    @property
    def fps(self) -> float:
        return self.frames / self.wall_ms * 1000.0 if self.wall_ms > 0 else 0.0

    @property
    def tiles_per_ms(self) -> float:
        return self.tiles / self.wall_ms if self.wall_ms > 0 else 0.0

    @property
    def ratio(self) -> float | None:
        """Pipeline tiles/ms over the bare runner's at the same batch."""
        return self.tiles_per_ms / self.bare.tiles_per_ms if self.bare and self.bare.tiles_per_ms else None

    def stage_stats(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, samples in [*self.stages_ms.items(), ("latency", self.latency_ms)]:
            if samples:
                s = np.asarray(samples)
                out[name] = {"median_ms": float(np.median(s)), "p90_ms": float(np.percentile(s, 90)),
                             "p99_ms": float(np.percentile(s, 99)), "mean_ms": float(s.mean()),
                             "min_ms": float(s.min()), "max_ms": float(s.max())}
        return out

    def payload(self) -> dict[str, Any]:
        """The ``kind: "stream"`` record's fields (raw per-frame samples, unrounded)."""
        bare = None
        if self.bare is not None:
            bare = {"batch": self.batch, "stats": self.bare.to_dict(), "samples_ms": self.bare_samples_ms}
        return {"scenario": "frame", "source": {"text": self.source.text, "kind": self.source.kind,
                                                "live": self.source.live, "fps": self.source.fps,
                                                "frames": self.source.frames},
                "model": {"name": self.model},
                "backend": {"name": self.backend_name, "label": self.backend, "options": self.options},
                "batch": self.batch, "grid": self.grid, "frames": self.frames, "tiles": self.tiles,
                "dropped": self.dropped, "unreadable": self.unreadable,
                "deadline_ms": self.deadline_ms, "deadline_misses": self.misses,
                "wall_ms": self.wall_ms, "stalled_ms": self.stalled_ms,
                "frame_sizes": [[w, h] for h, w in self.frame_sizes],
                "fps": self.fps, "tiles_per_ms": self.tiles_per_ms,
                "bare": bare, "pipeline_vs_bare": self.ratio,
                "capture": self.capture, "paced": self.paced, "stages": self.stage_stats(),
                "stage_samples_ms": self.stages_ms,
                "latency_samples_ms": self.latency_ms, "ended": self.ended, "notes": self.notes}


def run_stream(source: Source, classifier: TileClassifier, config: StreamConfig = StreamConfig(),
               sinks: Sequence[Sink] = (), *, writer: Writer | None = None,
               on_frame: Callable[[StreamRun], None] | None = None,
               clock: Callable[[], int] = time.perf_counter_ns) -> StreamRun:
    """Run ``source`` through ``classifier`` (already entered) into ``sinks``; see the module."""
    info = source.info
    runner = classifier.runner
    threaded = config.capture_thread
    if threaded is None:  # a CPU backend keeps the cores busy: a thread would only compete
        threaded = runner.device != "cpu"
    capture = Capture(source, depth=config.depth, realtime=config.realtime, fps=config.fps,
                      max_frames=config.max_frames, prepare=classifier.prepare, threaded=threaded,
                      clock=clock)
    deadline = config.deadline_ms
    if deadline is None and capture.live:  # the pace of --realtime, else what the camera granted
        rate = capture.pace_fps or info.fps or config.fps
        deadline = 1000.0 / rate if rate else None
    run = StreamRun(info, classifier.name, runner.label, runner.backend,
                    dict(runner.options), deadline, notes=list(classifier.notes))
    run.capture = "thread" if capture.threaded else "inline"
    run.paced = capture.live
    state = _Loop(run, classifier, capture, sinks, config, on_frame, clock, live=capture.live)
    try:
        with capture:
            first = capture.prime()
            if first is not None:  # as a deployment would: one-off first-run costs untimed
                t0 = clock()
                classifier.infer(first.prepared, first.index)
                warm = clock() - t0
                first.read_ns += warm  # the warm-up is not frame 0's latency
                first.arrived_ns += warm
            # frame 0 was read and cut before the clock started: count that time in
            state.start = clock() - (int(first.decode_ms * 1e6 + first.prepare_ms * 1e6) if first else 0)
            capture.start()
            state.loop()
        if capture.error is not None:
            _source_broke(run, capture.error)
        elif config.max_frames is not None and run.frames >= config.max_frames:
            run.ended = f"frame limit ({config.max_frames})"
    except KeyboardInterrupt:
        run.interrupted, run.ended = True, "interrupted (Ctrl-C)"
    except Exception as exc:  # a sink or the backend failed mid-run: keep what was done
        if not run.frames:
            raise
        run.ended = f"failed after {run.frames} frames: {exc}"
        _finish(run, source, classifier, sinks, None, config, writer)
        raise
    if run.stalled_ms:
        run.notes.append(f"the source stalled for {run.stalled_ms / 1000:.1f} s in all (reads over "
                         f"{STALL_MS / 1000:g} s): left out of fps and tiles/ms")
    if len(run.frame_sizes) > 1:
        run.notes.append("the frame size changed: " + ", ".join(f"{w}x{h}" for h, w in
                                                                 run.frame_sizes[:5])
                         + " (each size tiled on its own grid; the table shows the first)")
    if config.fps is not None and not capture.live and not config.realtime:
        run.notes.append(f"--fps {config.fps:g} paces only --realtime or a camera: this file was "
                         "read as fast as it decodes")
    _finish(run, source, classifier, sinks, state.last_tiles, config, writer)
    if run.frames == 0 and not run.interrupted:
        raise StreamError(f"{info.text} gave no frame: {_why_empty(info.kind)}")
    return run


@dataclass
class _Loop:
    """The consumer's side: frames in, results out, every figure kept per frame."""

    run: StreamRun
    classifier: TileClassifier
    capture: Capture
    sinks: Sequence[Sink]
    config: StreamConfig
    on_frame: Callable[[StreamRun], None] | None
    clock: Callable[[], int]
    live: bool
    start: int = 0
    last_tiles: np.ndarray | None = None

    def loop(self) -> None:
        """Frame by frame; on a runner with several slots (a GPU) the next frame's batches are
        queued before the last frame is collected whenever the next frame is already waiting,
        so its copy-in overlaps the compute (a live source idle between frames is not held)."""
        classifier, limit = self.classifier, self.config.max_frames
        while limit is None or self.run.frames + classifier.in_flight < limit:
            item = self.capture.get()
            if item is None:
                break
            got = self.clock()
            if not classifier.overlaps:
                if self.finish(item, classifier.infer(item.prepared, item.index), got):
                    return
                continue
            for result, (done_item, done_got) in classifier.submit(item.prepared, item.index,
                                                                   (item, got)):
                if self.finish(done_item, result, done_got):
                    return
            if not self.capture.waiting():
                for result, (done_item, done_got) in classifier.drain():
                    if self.finish(done_item, result, done_got):
                        return
        for result, (done_item, done_got) in classifier.drain():
            if self.finish(done_item, result, done_got):
                return

    def finish(self, item: Captured, result: Any, got: int) -> bool:
        """Sinks and bookkeeping for one classified frame; True: stop (the time limit)."""
        run, clock = self.run, self.clock
        t_sink = clock()
        for sink in self.sinks:
            sink.write(item.image, result)
        done = clock()
        if run.frames == 0:
            _describe(run, item.prepared.tiler)
            run.batch = self.classifier.batch_for(item.prepared.tiler.count)
        self.last_tiles = item.prepared.tiles
        ready = max(item.arrived_ns + int(item.prepare_ms * 1e6), self.start)
        if self.live and item.decode_ms > STALL_MS:  # a live source that stopped sending a while
            run.stalled_ms += item.decode_ms
        shape = item.prepared.tiler.frame_hw
        if shape not in run.frame_sizes:
            run.frame_sizes.append(shape)
        _add(run, {"capture": item.decode_ms, "tile": item.prepare_ms, "wait": (got - ready) / 1e6,
                   **result.stages_ms, "sink": (done - t_sink) / 1e6})
        # live: from the frame's arrival (a read waits for it); a file: from the read
        latency = (done - (item.arrived_ns if self.live else item.read_ns)) / 1e6
        run.latency_ms.append(latency)
        run.misses += run.deadline_ms is not None and latency > run.deadline_ms
        run.frames += 1
        run.tiles += len(result.labels)
        run.wall_ms = (done - self.start) / 1e6 - run.stalled_ms
        run.dropped = self.capture.dropped
        if self.on_frame is not None:
            self.on_frame(run)
        duration = self.config.duration_s
        if duration is not None and run.wall_ms >= duration * 1000:
            run.ended = f"duration limit ({duration:g} s)"
            return True
        return False


def _why_empty(kind: str) -> str:
    return {"folder": "none of its images could be decoded",
            "camera": "the camera opened but sent nothing (busy, or a metadata-only node? "
                      "`v4l2-ctl --list-devices`)",
            "network": "the stream opened but sent no frame within --timeout (is the sender "
                       "running?)",
            "gstreamer": "the pipeline started but its appsink gave nothing within --timeout",
            }.get(kind, "its first frame could not be decoded (a damaged or unsupported file?)")


def _describe(run: StreamRun, tiler: Any) -> None:
    run.grid = {"rows": tiler.rows, "cols": tiler.cols, "tile": list(tiler.tile),
                "stride": list(tiler.stride), "roi": str(tiler.roi), "scale": tiler.config.scale,
                "pixel_scale": tiler.config.pixel_scale,
                "frame": [tiler.frame_hw[1], tiler.frame_hw[0]]}


def _finish(run: StreamRun, source: Source, classifier: TileClassifier, sinks: Sequence[Sink],
            last_tiles: np.ndarray | None, config: StreamConfig, writer: Writer | None) -> None:
    """Close the sinks, note what the source skipped, time the runner bare, append the record."""
    for sink in sinks:
        try:
            sink.close()
        except CnnDeployError as exc:
            run.notes.append(f"an output could not be finished: {exc}")
    run.unreadable = source.unreadable
    if source.unreadable:
        run.notes.append(f"{source.unreadable} image(s) could not be decoded and were skipped")
    info = source.info
    if info.frames and not info.live and run.frames + run.unreadable + run.dropped < info.frames \
            and run.ended == "end of source":
        run.notes.append(f"the source ended after {run.frames} of the {info.frames} frames its "
                         "header announced (truncated or damaged file?)")
    if config.bare and run.frames and not run.interrupted and last_tiles is not None:
        try:
            _time_bare(run, classifier, last_tiles, config.bare_timing)
        except KeyboardInterrupt:
            run.interrupted = True
            run.notes.append("the bare timing was interrupted (Ctrl-C): no pipeline-vs-bare ratio")
        except CnnDeployError as exc:
            run.notes.append(f"the bare timing failed ({exc}): no pipeline-vs-bare ratio")
    if writer is not None and run.frames:
        run.record = writer.append("stream", run.payload())


def _add(run: StreamRun, stages: dict[str, float]) -> None:
    for name in STAGES:
        run.stages_ms[name].append(float(stages.get(name, 0.0)))


def _source_broke(run: StreamRun, error: BaseException) -> None:
    """A source that fails before the first frame is the user's error; after it, the run ends
    with what it did."""
    source_error = type(error).__module__.startswith("cv2") or isinstance(error, OSError)
    if not isinstance(error, CnnDeployError) and not source_error:
        raise error
    if run.frames == 0:
        if isinstance(error, CnnDeployError):
            raise error
        raise StreamError(f"{run.source.text}: the source failed before the first frame ({error})")
    run.ended = f"source error after {run.frames} frames: {error}"


def _time_bare(run: StreamRun, classifier: TileClassifier, tiles: np.ndarray,
               timing: TimingConfig) -> None:
    """The same runner, the same batch, no pipeline: the one harness's figure."""
    batch = run.batch
    x = tiles[:batch]
    if x.shape[0] < batch:
        x = np.resize(tiles, (batch, *tiles.shape[1:]))
    need = classifier.padded(batch)
    if need > batch:
        x = np.concatenate([x, np.zeros((need - batch, *x.shape[1:]), x.dtype)])
    samples = time_runner(classifier.runner, np.ascontiguousarray(x), timing)
    run.bare = summarise(samples.latency_ms, batch)
    run.bare_samples_ms = samples.latency_ms
    if need > batch:
        run.notes.append(f"the bare figure runs batch {need} (the engine's minimum) and counts {batch} tiles")
