"""The one backend interface: load, signature, stage an input, run a batch, synchronise.

Runners are context managers: nothing is loaded before ``__enter__``. The base class
does the bookkeeping every backend shares (input validation); subclasses implement only
their own step. Timing is not a runner's business: ``bench.py`` owns it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnn_deploy.errors import BenchError


@dataclass(frozen=True)
class Signature:
    """The model's input contract: NCHW float, batch ``None`` when dynamic."""

    input_name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    output_name: str = "logits"

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0]

    def example_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *(int(d) for d in self.shape[1:] if d is not None))


@dataclass(frozen=True)
class LayerTime:
    """One layer's (or fused layer's) time in one profiled run, as the profiler names it."""

    layer: str  # the profiler's name: ONNX node, aten op, TensorRT layer
    op: str  # its op type: Conv, FusedConv, aten::convolution, a TensorRT layer type...
    time_ms: float
    run: int  # which profiled run (0-based)
    constituents: tuple[str, ...] = ()  # original layers fused into it, where the profiler says


class PhaseTimer(ABC):
    """Device-side timestamps (CUDA events) recorded on a runner's stream.

    ``mark("start")`` comes first; every later ``mark(name)`` ends the phase ``name``.
    After the runner synchronised, ``elapsed_ms()`` gives each phase's device time,
    e.g. ``{"h2d": 0.01, "compute": 0.20, "d2h": 0.01}``.
    """

    @abstractmethod
    def mark(self, phase: str) -> None: ...

    @abstractmethod
    def elapsed_ms(self) -> dict[str, float]: ...


class Runner(ABC):
    """A loaded model on one backend; use as ``with runner: ...``."""

    backend = ""

    def __init__(self, options: dict[str, Any] | None = None, device: str = "cpu") -> None:
        self.options: dict[str, Any] = dict(options or {})
        self.device = device
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
        from cnn_deploy.errors import BackendError

        raise BackendError(f"{self.label} cannot report per-layer times")

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
        if x.dtype != np.dtype(sig.dtype):
            raise BenchError(f"{self.label} expects {sig.dtype} input, got {x.dtype}")

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Validate, run and return outputs as numpy (not for timing: see bench.py)."""
        if not self._active:
            raise RuntimeError("use the runner inside a `with` block")
        self.check_input(x)
        out = self.run(self.stage(x))
        self.synchronize()
        return self.to_numpy(out)


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
