"""The one backend interface: load, signature, stage an input, run a batch, synchronise.

Runners are context managers: nothing is loaded before ``__enter__``. The base class
does the bookkeeping every backend shares (input validation); subclasses implement only
their own step. Timing is not a runner's business: ``cnn_deploy.bench`` owns it.

A backend module describes itself with one :class:`Backend` (its name, aliases, probe,
runner factory, option schema); :mod:`cnn_deploy.backends.registry` lists the modules.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cnn_deploy.errors import BackendError, BenchError
from cnn_deploy.onnxfile import Signature

if TYPE_CHECKING:
    from cnn_deploy.arch import NetSpec

__all__ = ["Availability", "Backend", "LayerTime", "Option", "PhaseTimer", "Runner",
           "Signature", "Target"]


# Bounds for thread, stream and device-index options: far above any machine, far below what
# overflows the C integers the runtimes take (2**31 threads ended in a pybind TypeError).
MAX_THREADS = 4096
MAX_DEVICES = 1024


# -- what a runner is asked to load -----------------------------------------------
@dataclass(frozen=True)
class Target:
    """A network to time: an ONNX file, a spec, an engine, or several (a spec lets torch time
    it too; an engine is what TensorRT loads)."""

    name: str
    onnx: Path | None = None
    spec: NetSpec | None = None
    checkpoint: Path | None = None
    trained: bool = False
    engine: Path | None = None  # a TensorRT plan (cnndeploy build)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "onnx": str(self.onnx) if self.onnx else None,
                "spec": self.spec.to_dict() if self.spec else None,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "trained": self.trained, "engine": str(self.engine) if self.engine else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        from cnn_deploy.arch import NetSpec

        return cls(d["name"], Path(d["onnx"]) if d.get("onnx") else None,
                   NetSpec.from_dict(d["spec"]) if d.get("spec") else None,
                   Path(d["checkpoint"]) if d.get("checkpoint") else None,
                   bool(d.get("trained")), Path(d["engine"]) if d.get("engine") else None)


# -- how a backend describes itself to the registry --------------------------------
@dataclass(frozen=True)
class Availability:
    """One backend on one device or execution provider: usable here, and why (not)."""

    backend: str
    target: str  # device or execution provider: cpu, cuda, CPUExecutionProvider...
    usable: bool
    why: str  # one line: what it is when usable, why not otherwise
    gpu: bool = False  # a GPU target (cuda, CUDA/TensorRT execution providers)


def _no_check(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Option:
    """One backend option, ``-o BACKEND.KEY=VALUE``: its type, default and allowed values.

    ``kind`` is ``str``, ``int`` or ``bool``; ``choices`` limits a ``str``;
    ``minimum`` and ``maximum`` bound an ``int``; ``optional`` lets ``none``/``default`` mean "not set".
    ``check`` returns a reason when a parsed value is still wrong (e.g. a device name).
    """

    key: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    optional: bool = False
    check: Callable[[Any], str | None] = _no_check

    def parse(self, backend: str, value: Any) -> Any:
        """A value from the command line (text) or from code -> the typed value, or raise."""
        where = f"{backend}.{self.key}"
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "default")):
            if self.optional or self.default is None:
                return None
            raise BackendError(f"{where} needs a value: {self.help}")
        got = self._typed(where, value)
        if self.choices and got not in self.choices:
            close = difflib.get_close_matches(str(got), self.choices, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise BackendError(f"{where}={value} is not one of {', '.join(self.choices)}.{hint}")
        if self.minimum is not None and got < self.minimum:
            raise BackendError(f"{where}={value}: must be at least {self.minimum} ({self.help})")
        if self.maximum is not None and got > self.maximum:
            raise BackendError(f"{where}={value}: must be at most {self.maximum} ({self.help})")
        why = self.check(got)
        if why:
            raise BackendError(f"{where}={value}: {why}")
        return got

    def _typed(self, where: str, value: Any) -> Any:
        text = str(value).strip()
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise BackendError(f"{where}={value}: expected true or false")
        if self.kind == "int":
            if isinstance(value, bool):
                raise BackendError(f"{where}={value}: expected an integer")
            try:
                return int(text)
            except ValueError:
                raise BackendError(f"{where}={value}: expected an integer") from None
        if not text:
            raise BackendError(f"{where} is empty: {self.help}")
        return text.lower() if self.choices else text


@dataclass(frozen=True)
class Backend:
    """One backend, as the registry knows it. ``needs`` is the Target field its runner loads
    (``onnx``, ``spec`` or ``engine``); ``probe()`` says per device whether it can run here;
    ``runner(target, options)`` builds an inactive runner from validated options.
    ``device_options(device)`` are the options that put it on ``device`` (``cpu``/``cuda``);
    ``baseline(device)``, where given, are the options of the baseline row every table keeps."""

    name: str
    summary: str
    needs: str
    probe: Callable[[], list[Availability]]
    runner: Callable[[Target, dict[str, Any]], Runner]
    options: tuple[Option, ...]
    aliases: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cpu",)
    profiles: bool = False  # can report per-layer times
    device_options: Callable[[str], dict[str, Any]] = field(default=lambda device: {})
    baseline: Callable[[str], dict[str, Any]] | None = None
    packages: tuple[str, ...] = ()  # distributions whose versions every record carries
    fuses: bool = True  # its deployed graph fuses layers (torch eager does not)
    # resolved options -> the probe row (Availability.target) a runner with them needs
    probe_target: Callable[[dict[str, Any]], str] = field(default=lambda options: "")
    default: int = 0  # > 0: in the table when no --backend is given, in this order
    # (unfused?, given options) -> (option changes, one-line note) for a per-layer profile;
    # None: the backend profiles its deployed graph only, and --unfused is refused
    profile_graph: Callable[[bool, dict[str, Any]], tuple[dict[str, Any], str]] | None = None
    # options for a runner that shares the cores with other work (a camera pipeline's capture
    # and decode) rather than running back to back: the defaults a stream starts from
    pipeline_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # what `cnndeploy tune` tries: option -> values (every combination; None: the default)
    tune_space: dict[str, tuple[Any, ...]] = field(default_factory=dict, hash=False, compare=False)
    # what `cnndeploy tune` builds an engine for and times (TensorRT's builder optimisation
    # level): build option -> values, the first one the builder's own default
    build_space: dict[str, tuple[Any, ...]] = field(default_factory=dict, hash=False, compare=False)

    def option(self, key: str) -> Option:
        for o in self.options:
            if o.key == key:
                return o
        keys = [o.key for o in self.options]
        close = difflib.get_close_matches(key, keys, n=1)
        hint = f" Did you mean '{self.name}.{close[0]}'?" if close else ""
        choose = ", ".join(f"{self.name}.{k}" for k in keys) or "none"
        raise BackendError(f"unknown option '{self.name}.{key}': {self.name} takes {choose}.{hint}")

    def resolve(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every option of this backend: the given ones parsed and checked, the rest defaults."""
        parsed = {key: self.option(key).parse(self.name, value) for key, value in given.items()}
        return {o.key: parsed.get(o.key, o.default) for o in self.options}

    def missing(self, target: Target) -> str | None:
        """Why this backend cannot load ``target`` (None when it can)."""
        if getattr(target, self.needs) is not None:
            return None
        what = {"onnx": "an ONNX file", "spec": "the network's spec (cnn_deploy metadata)",
                "engine": "a TensorRT engine (`cnndeploy build`, then --engine)"}[self.needs]
        return f"{self.name} needs {what}; {target.name} has none"


@dataclass(frozen=True)
class LayerTime:
    """One layer's (or fused layer's) time in one profiled run, as the profiler names it."""

    layer: str  # the profiler's name: ONNX node, aten op, TensorRT layer
    op: str  # its op type: Conv, FusedConv, aten::convolution, a TensorRT layer type...
    time_ms: float
    run: int  # which profiled run (0-based)
    constituents: tuple[str, ...] = ()  # original layers fused into it, where the profiler says


def check_batch_range(batches: Iterable[int], limits: tuple[int, int], what: str) -> None:
    """The one batch-range check: refuse batches outside ``limits`` (an engine's optimisation
    profile), naming the range and the rebuild that would take them."""
    low, high = limits
    outside = [b for b in batches if not low <= b <= high]
    if outside:
        rebuild = f"rebuild it with `cnndeploy build <model>.onnx --max-batch {max(high, *outside)}`"
        if min(outside) < low:
            rebuild += f" and --min-batch {min(outside)} (a smaller minimum batch)"
        raise BenchError(f"batch {', '.join(map(str, outside))} is outside {what}'s batch profile "
                         f"{low}..{high}: use --batch within it or {rebuild}")


class PhaseTimer(Protocol):
    """Device-side timestamps (CUDA events) recorded on a runner's stream.

    ``mark("start")`` comes first; every later ``mark(name)`` ends the phase ``name``.
    After the runner synchronised, ``elapsed_ms()`` gives each phase's device time,
    e.g. ``{"h2d": 0.01, "compute": 0.20, "d2h": 0.01}``.
    """

    def mark(self, phase: str) -> None: ...

    def elapsed_ms(self) -> dict[str, float]: ...


class Runner(ABC):
    """A loaded model on one backend; use as ``with runner: ...``."""

    backend = ""

    def __init__(self, options: dict[str, Any] | None = None, device: str = "cpu") -> None:
        self.options: dict[str, Any] = dict(options or {})
        self.device = device
        self.notes: list[str] = []  # for the user: what the backend changed or warned about
        self.applied: dict[str, Any] = {}  # what the backend reports it runs with (recorded)
        # set by run_phased where the runner times its enqueue call alone (TensorRT's
        # enqueueV3, as trtexec's "Enqueue Time"); None: the harness times run_phased whole
        self.last_enqueue_ms: float | None = None
        self._active = False

    @property
    @abstractmethod
    def label(self) -> str:
        """One line naming backend and settings, e.g. 'onnxruntime cpu (extended, 2 threads)'."""

    @abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        return None

    @property
    @abstractmethod
    def signature(self) -> Signature: ...

    @abstractmethod
    def stage(self, x: np.ndarray) -> Any:
        """Put a validated input batch where the backend reads it (outside the timed region)."""

    @abstractmethod
    def run(self, staged: Any) -> Any:
        """Run one batch; returns the backend's output handle."""

    def synchronize(self) -> None:
        """Wait for queued work; CPU backends finish inside ``run``."""
        return None

    @abstractmethod
    def to_numpy(self, output: Any) -> np.ndarray: ...

    # -- per-layer profiling (a separate pass from timing) -------------------
    def profile_layers(self, x: np.ndarray, runs: int) -> list[LayerTime]:
        """Run ``x`` ``runs`` times under the backend's own profiler; per-layer times."""
        raise BackendError(f"{self.label} cannot report per-layer times")

    def free_memory_bytes(self) -> int | None:
        """Free memory where this runner's batches live, when that is not host memory (a GPU);
        None: the host's available memory is the limit."""
        return None

    def batch_limits(self) -> tuple[int, int] | None:
        """(min, max) batch the loaded model takes, where it is bounded (an engine's profile)."""
        return None

    # -- batches in flight (a stream on a GPU) ---------------------------------
    def slots(self) -> int:
        """How many batches can be in flight at once, each in its own buffers: a GPU runner
        copies batch k + 1 in while batch k computes. 1: one batch at a time (CPU backends)."""
        return 1

    def submit(self, x: np.ndarray, slot: int) -> Any:
        """Start batch ``x`` in buffer set ``slot`` (``0 <= slot < slots()``) and return without
        waiting; the handle goes to :meth:`collect`. A slot is collected before it is reused.
        The default runs the batch to the end here."""
        return self.infer(x)

    def collect(self, handle: Any) -> np.ndarray:
        """Wait for a submitted batch and return its first output (a copy)."""
        return np.asarray(handle)

    # -- device timing (GPU runners override) --------------------------------
    def phase_timer(self) -> PhaseTimer | None:
        """A fresh timer on this runner's stream; None on the CPU (host clock only)."""
        return None

    def run_phased(self, staged: Any, timer: PhaseTimer) -> Any:
        """Enqueue one batch with ``timer`` marks between its phases (h2d, compute, d2h).

        Runners whose input already lives on the device mark only ``compute``.
        """
        timer.mark("start")
        out = self.run(staged)
        timer.mark("compute")
        return out

    # -- shared bookkeeping --------------------------------------------------
    def __enter__(self) -> Runner:
        if not self._active:
            self._activate()
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            self._deactivate()
            self._active = False

    def check_input(self, x: np.ndarray) -> None:
        sig = self.signature
        if x.ndim != len(sig.shape):
            raise BenchError(f"{self.label} expects a rank-{len(sig.shape)} input "
                             f"{_fmt(sig.shape)}, got shape {x.shape}")
        for axis, (want, got) in enumerate(zip(sig.shape, x.shape, strict=True)):
            if want is not None and want != got:
                what = "batch" if axis == 0 else f"axis {axis}"
                raise BenchError(f"{self.label} expects input {_fmt(sig.shape)}; {what} is "
                                 f"{got}, not {want}")
        limits = self.batch_limits()
        if limits is not None:
            check_batch_range([int(x.shape[0])], limits, self.label)
        if x.dtype != np.dtype(sig.dtype):
            raise BenchError(f"{self.label} expects {sig.dtype} input, got {x.dtype}")

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Validate, run and return outputs as numpy (not for timing: see cnn_deploy.bench)."""
        if not self._active:
            raise RuntimeError("use the runner inside a `with` block")
        self.check_input(x)
        out = self.run(self.stage(x))
        self.synchronize()
        return self.to_numpy(out)


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
