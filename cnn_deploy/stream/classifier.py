"""The library API for embedding: :class:`TileClassifier` turns one frame into one label and
confidence per tile, on any backend of the registry. Importable without typer or rich::

    from cnn_deploy.stream.classifier import TileClassifier

    with TileClassifier.from_path("models/lenet_1c1f.onnx", backend="openvino") as clf:
        result = clf.classify(frame)  # a (H, W) gray or (H, W, 3) BGR uint8 frame
        result.labels, result.confidence, result.origins

The model's input contract is honoured: a cnn_deploy export takes raw 0..255 pixels (its
normalisation is folded in); a foreign classifier gets 0..1 pixels unless ``pixel_scale`` says
otherwise, and its own H, W and C (a 3-channel model gets RGB tiles). Tiles are cut into batches
the backend takes: an engine's optimisation profile bounds them, a fixed-batch model gets its own
batch (the last one padded), other backends take the whole frame in one batch unless ``batch``
says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.backends import registry
from cnn_deploy.backends.base import Runner, Target, check_batch_range
from cnn_deploy.errors import BackendError, StreamError
from cnn_deploy.stream.tiling import Tiler, TilingConfig

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
DEFAULT_MAX_BATCH = 4096  # a frame's tiles in batches of at most this many unless --batch says


@dataclass
class FrameResult:
    """One frame's tiles: label and confidence per tile (row-major), where each tile lies in the
    source frame, and how long each stage took (ms)."""

    index: int
    labels: np.ndarray  # (tiles,) int64
    confidence: np.ndarray  # (tiles,) float32, the winning class's probability
    origins: np.ndarray  # (tiles, 2) int64: top-left (x, y) in source pixels
    tile_hw: tuple[int, int]  # a tile's size in source pixels
    grid: tuple[int, int]  # (rows, cols)
    stages_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.index, "rows": self.grid[0], "cols": self.grid[1],
                "tile": list(self.tile_hw),
                "tiles": [[int(x), int(y), int(label), round(float(conf), 4)] for (x, y), label, conf
                          in zip(self.origins, self.labels, self.confidence, strict=True)]}


@dataclass
class _Flight:
    """A frame between submit and its last batch's collect."""

    index: int
    prepared: Any
    labels: np.ndarray
    confidence: np.ndarray
    stages: dict[str, float] = field(
        default_factory=lambda: {"stage": 0.0, "infer": 0.0, "d2h": 0.0, "post": 0.0})
    left: int = 0
    tag: Any = None

    def result(self) -> FrameResult:
        tiler = self.prepared.tiler
        return FrameResult(self.index, self.labels, self.confidence, tiler.origins(),
                           tiler.source_tile, (tiler.rows, tiler.cols), self.stages)


@dataclass
class Prepared:
    """A frame's tiles, cut (the capture thread does this ahead of inference)."""

    tiles: np.ndarray
    tiler: Tiler


class TileClassifier:
    """A loaded model that classifies every tile of a frame. Use as a context manager."""

    def __init__(self, runner: Runner, *, tiling: TilingConfig = TilingConfig(),
                 batch: int | None = None, name: str = "", notes: list[str] | None = None) -> None:
        self.runner, self.tiling, self.requested_batch = runner, tiling, batch
        self.name = name or runner.label
        self.notes: list[str] = list(notes or [])
        self._tilers: dict[tuple[int, int], Tiler] = {}
        self._limits: tuple[int, int] | None = None
        self._fixed: int | None = None
        self._pending: deque[tuple[_Flight, int, int, Any]] = deque()  # batches in flight
        self._next_slot = 0
        if batch is not None and batch < 1:
            raise StreamError(f"--batch {batch}: must be at least 1")

    # -- loading --------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def from_path(cls, path: str | Path, *, backend: str | None = None,
                  options: dict[str, Any] | None = None, tiling: TilingConfig | None = None,
                  batch: int | None = None) -> Iterator[TileClassifier]:
        """An ONNX file, a checkpoint (.pt) or a TensorRT engine (.plan) on ``backend`` (default:
        the backend that loads it: ONNX Runtime for ONNX, TensorRT for an engine), loaded."""
        from cnn_deploy.bench.targets import engine_target, resolve_target

        path = Path(path)
        is_engine = path.suffix.lower() in ENGINE_SUFFIXES
        with contextlib.ExitStack() as stack:
            if is_engine:
                target, notes = engine_target(path)
            else:
                target, notes = stack.enter_context(resolve_target(path, None))
            with cls.for_target(target, backend=backend, options=options, tiling=tiling,
                                batch=batch, notes=notes) as classifier:
                yield classifier

    @classmethod
    def for_target(cls, target: Target, *, backend: str | None = None,
                   options: dict[str, Any] | None = None, tiling: TilingConfig | None = None,
                   batch: int | None = None, notes: list[str] | None = None) -> TileClassifier:
        """An inactive classifier of ``target`` on ``backend`` (enter it to load)."""
        name = backend or default_backend(target.engine is not None)
        entry = registry.get(name)
        why = entry.missing(target)
        if why is not None:
            raise BackendError(why)
        given = dict(options or {})
        notes = list(notes or [])
        for key, value in entry.pipeline_options.items():
            if key not in given and entry.option(key).parse(entry.name, value) is not None:
                given[key] = value
                notes.append(f"{entry.name}.{key}={str(value).lower()} (its pipeline default: it "
                             f"shares the cores with capture and decode; -o {entry.name}.{key}=... "
                             "to change it)")
        resolved = entry.resolve(given)
        usable = registry.availability(entry, resolved)
        if usable is not None and not usable.usable:
            raise BackendError(f"{entry.name} cannot run here: {usable.why}")
        tiling = tiling or TilingConfig()
        if tiling.pixel_scale is None:
            tiling = replace(tiling, pixel_scale=_pixel_scale(target, notes))
        runner = entry.runner(target, resolved)
        return cls(runner, tiling=tiling, batch=batch, name=target.name, notes=notes)

    def __enter__(self) -> TileClassifier:
        self.runner.__enter__()
        try:
            self._settle_batch()
        except BaseException:
            self.runner.__exit__(None, None, None)
            raise
        self.notes.extend(self.runner.notes)
        return self

    def __exit__(self, *exc: object) -> None:
        self._pending.clear()  # the runner's exit waits for what is still on the GPU
        self.runner.__exit__(*exc)

    def _settle_batch(self) -> None:
        sig = self.runner.signature
        if len(sig.shape) != 4:
            raise StreamError(f"{self.name}'s input is {sig.shape}: stream needs an image batch "
                              "input (N, C, H, W)")
        self._fixed = sig.fixed_batch
        self._limits = self.runner.batch_limits()
        if self.requested_batch is not None:
            if self._limits is not None:
                check_batch_range([self.requested_batch], self._limits, self.name)
            if self._fixed is not None and self.requested_batch != self._fixed:
                raise StreamError(f"--batch {self.requested_batch}: {self.name} has a fixed batch "
                                  f"of {self._fixed}; drop --batch or re-export with a dynamic batch")

    # -- the model's side of tiling -----------------------------------------------
    @property
    def channels(self) -> int:
        return int(self.runner.signature.shape[1] or 1)

    @property
    def model_hw(self) -> tuple[int, int]:
        shape = self.runner.signature.shape
        return (int(shape[2] or 0), int(shape[3] or 0))

    def tiler(self, frame_hw: tuple[int, int]) -> Tiler:
        tiler = self._tilers.get(frame_hw)
        if tiler is None:
            tiler = self._tilers[frame_hw] = Tiler(self.tiling, self.channels, self.model_hw, frame_hw)
        return tiler

    def batch_for(self, tiles: int) -> int:
        """Tiles per batch for a frame of ``tiles`` tiles."""
        if self._fixed is not None:
            return self._fixed
        if self.requested_batch is not None:
            return min(self.requested_batch, tiles)
        if self._limits is not None:
            return min(tiles, self._limits[1])
        return min(tiles, DEFAULT_MAX_BATCH)

    # -- one frame ----------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> Prepared:
        """Cut a frame into the model's tiles (thread-safe: the capture thread calls it)."""
        if image.ndim not in (2, 3):
            raise StreamError(f"a frame must be (H, W) gray or (H, W, 3) colour, got {image.shape}")
        tiler = self.tiler((int(image.shape[0]), int(image.shape[1])))
        return Prepared(tiler.cut(image), tiler)

    def _batches(self, tiles: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """(first tile, tiles, the batch as run: padded to a fixed batch or a profile minimum)."""
        count = int(tiles.shape[0])
        batch = self.batch_for(count)
        out = []
        for start in range(0, count, batch):
            chunk = tiles[start:start + batch]
            n = int(chunk.shape[0])
            need = self.padded(n)
            if need > n:
                chunk = np.concatenate([chunk, np.zeros((need - n, *chunk.shape[1:]), chunk.dtype)])
            out.append((start, n, chunk))
        return out

    @property
    def overlaps(self) -> bool:
        """The runner keeps several batches in flight (a GPU): use :meth:`submit`/:meth:`drain`
        to overlap one frame's copy-in with the previous frame's compute."""
        return self.runner.slots() > 1

    @property
    def in_flight(self) -> int:
        """Frames submitted and not yet finished."""
        return len({id(flight) for flight, *_ in self._pending})

    def infer(self, prepared: Prepared, index: int = 0) -> FrameResult:
        """Classify prepared tiles in batches; stage times in ``stages_ms``. Where the runner
        keeps several batches in flight (a GPU), batch k + 1 is copied in while k computes."""
        if self.overlaps:
            finished = [*self.submit(prepared, index), *self.drain()]
            return next(result for result, _ in finished if result.index == index)
        tiles = prepared.tiles
        count = int(tiles.shape[0])
        flight = _Flight(index, prepared, np.empty(count, np.int64), np.empty(count, np.float32))
        self._infer_in_turn(self._batches(tiles), flight.labels, flight.confidence, flight.stages)
        return flight.result()

    def submit(self, prepared: Prepared, index: int = 0, tag: Any = None) -> list[tuple[FrameResult, Any]]:
        """Queue a frame's batches on a runner with several slots: each waits only for the
        oldest batch in flight to free its slot, so its copy-in overlaps earlier compute.
        Returns the frames (with their ``tag``) that finished while making room, oldest first.
        ``stage``: host time to fill and enqueue; ``infer``: waiting for outputs (copy-out
        included); ``post``: top-1."""
        slots = self.runner.slots()
        tiles = prepared.tiles
        count = int(tiles.shape[0])
        flight = _Flight(index, prepared, np.empty(count, np.int64), np.empty(count, np.float32),
                         tag=tag)
        batches = self._batches(tiles)
        flight.left = len(batches)
        done: list[tuple[FrameResult, Any]] = []
        for start, n, chunk in batches:
            if len(self._pending) >= slots:
                done.extend(self._retire())  # frees the slot this batch takes
            t0 = time.perf_counter_ns()
            handle = self.runner.submit(chunk, self._next_slot)
            self._next_slot = (self._next_slot + 1) % slots
            flight.stages["stage"] += (time.perf_counter_ns() - t0) / 1e6
            self._pending.append((flight, start, n, handle))
        return done

    def drain(self) -> list[tuple[FrameResult, Any]]:
        """Wait for every batch in flight; the frames they finish, oldest first."""
        done: list[tuple[FrameResult, Any]] = []
        while self._pending:
            done.extend(self._retire())
        return done

    def _retire(self) -> list[tuple[FrameResult, Any]]:
        flight, start, n, handle = self._pending.popleft()
        t0 = time.perf_counter_ns()
        logits = self.runner.collect(handle)
        t1 = time.perf_counter_ns()
        lab, conf = _top1(_scores(logits, n))
        flight.labels[start:start + n], flight.confidence[start:start + n] = lab, conf
        flight.stages["infer"] += (t1 - t0) / 1e6
        flight.stages["post"] += (time.perf_counter_ns() - t1) / 1e6
        flight.left -= 1
        return [(flight.result(), flight.tag)] if flight.left == 0 else []

    def _infer_in_turn(self, batches: list[tuple[int, int, np.ndarray]], labels: np.ndarray,
                       confidence: np.ndarray, stages: dict[str, float]) -> None:
        clock = time.perf_counter_ns
        for start, n, chunk in batches:
            t0 = clock()
            staged = self.runner.stage(chunk)
            t1 = clock()
            out = self.runner.run(staged)
            self.runner.synchronize()
            t2 = clock()
            logits = self.runner.to_numpy(out)
            t3 = clock()
            lab, conf = _top1(_scores(logits, n))
            labels[start:start + n], confidence[start:start + n] = lab, conf
            t4 = clock()
            for key, a, b in (("stage", t0, t1), ("infer", t1, t2), ("d2h", t2, t3), ("post", t3, t4)):
                stages[key] += (b - a) / 1e6

    def padded(self, n: int) -> int:
        """The batch actually run for ``n`` tiles: a fixed batch, or the profile's minimum."""
        if self._fixed is not None:
            return self._fixed
        if self._limits is not None and n < self._limits[0]:
            return self._limits[0]
        return n

    def classify(self, image: np.ndarray, index: int = 0) -> FrameResult:
        """Cut and classify one frame."""
        t0 = time.perf_counter_ns()
        prepared = self.prepare(image)
        tile_ms = (time.perf_counter_ns() - t0) / 1e6
        result = self.infer(prepared, index)
        result.stages_ms = {"tile": tile_ms, **result.stages_ms}
        return result


def default_backend(engine: bool) -> str:
    """The backend a model runs on without -b: TensorRT for an engine, else the first backend
    that loads ONNX (ONNX Runtime)."""
    return registry.first_loading("engine" if engine else "onnx").name


def _pixel_scale(target: Target, notes: list[str]) -> float:
    """What 0..255 camera pixels are multiplied by for this model: its stated input range's top
    over 255 (a cnn_deploy export: 0..255, so 1), else 1/255 (0..1), with a note."""
    from cnn_deploy.onnxfile import read_metadata

    if target.onnx is None:  # an engine or a spec: a cnn_deploy network, raw pixels
        return 1.0
    raw = read_metadata(target.onnx).get("input")
    try:
        low, high = json.loads(raw)["pixel_range"] if raw else (None, None)
        if low == 0 and high is not None and float(high) > 0:
            return float(high) / 255.0
    except (ValueError, TypeError, KeyError):
        pass
    notes.append(f"{target.onnx.name} states no input range: tiles are fed as 0..1 pixels "
                 "(set --pixel-scale if it wants another range)")
    return 1 / 255


def _scores(logits: Any, n: int) -> np.ndarray:
    """The first ``n`` rows of a classifier's output as (n, classes) float32, or why not."""
    out = np.asarray(logits, dtype=np.float32)
    if out.ndim == 4 and out.shape[2:] == (1, 1):  # (N, classes, 1, 1) from a conv head
        out = out[:, :, 0, 0]
    if out.ndim != 2:
        raise StreamError(f"the model's output is {tuple(out.shape)}: stream needs class scores "
                          "(N, classes) per tile, as an image classifier gives")
    out = out[:n]
    if not np.isfinite(out).all():
        raise StreamError("the model's outputs hold NaN or infinity: check --pixel-scale and "
                          "the model (`cnndeploy bench` on it)")
    return out


def _top1(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax and its probability; logits go through a softmax, probabilities stay as they are."""
    labels = scores.argmax(axis=1)
    is_probability = scores.size and scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1, atol=1e-3)
    if is_probability:
        probs = scores
    else:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
    return labels, probs[np.arange(len(labels)), labels].astype(np.float32)
