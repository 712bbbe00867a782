"""The PyTorch backend: eager (the thesis-style baseline) or ``torch.compile`` opt-in.

The module timed is the deployed one: raw 0..255 pixels in, normalisation folded into the
first conv, exactly what the ONNX file holds. Channels-last is the default memory format
(1.6-3.9x faster than NCHW on a 2-core CPU, because of max-pool); the baseline row stays
"torch eager, NCHW, defaults".
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.arch import IN_CHANNELS, TILE, NetSpec
from cnn_deploy.backends.base import Runner, Signature
from cnn_deploy.errors import BackendError, BenchError

MEMORY_FORMATS = ("channels_last", "contiguous")
# The fastest known settings on a CPU, and the thesis-style baseline they are compared with.
DEFAULT_OPTIONS: dict[str, Any] = {"memory_format": "channels_last", "compile": False,
                                   "threads": None, "device": "cpu"}
BASELINE_OPTIONS: dict[str, Any] = {**DEFAULT_OPTIONS, "memory_format": "contiguous"}


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendError("torch is not installed: pip install torch "
                           "(the CPU build: pip install torch==2.13.0)") from None
    return torch


class TorchRunner(Runner):
    """``options``: memory_format, compile (bool), threads (None = torch's default), device."""

    backend = "torch"

    def __init__(self, spec: NetSpec, checkpoint: Path | None = None,
                 options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.spec, self.checkpoint = spec, checkpoint
        for key, value in DEFAULT_OPTIONS.items():
            self.options.setdefault(key, value)
        if self.options["memory_format"] not in MEMORY_FORMATS:
            raise BackendError(f"unknown torch memory_format '{self.options['memory_format']}': "
                               f"choose one of {', '.join(MEMORY_FORMATS)}")
        self.device = str(self.options["device"])
        self.baseline = all(self.options.get(k) == v for k, v in BASELINE_OPTIONS.items())
        self._model: Any = None
        self._compiled: Any = None
        self._shape: tuple[int, ...] | None = None
        self._stack = contextlib.ExitStack()

    @property
    def label(self) -> str:
        where = "" if self.device == "cpu" else f" {self.device}"
        if self.baseline:
            return f"torch eager{where} NCHW [baseline]"
        fmt = "channels-last" if self.options["memory_format"] == "channels_last" else "NCHW"
        mode = "compiled" if self.options["compile"] else "eager"
        threads = self.options["threads"]
        return f"torch {mode}{where} {fmt}" + (f" {threads}t" if threads else "")

    @property
    def signature(self) -> Signature:
        return Signature("tiles", (None, IN_CHANNELS, TILE, TILE), "float32", "logits")

    def _activate(self) -> None:
        torch = import_torch()
        from cnn_deploy.export import raw_pixel_module
        from cnn_deploy.train import load_checkpoint

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError("torch cannot see a CUDA GPU here: use --backend torch on the cpu")
        if self.options["threads"]:
            torch.set_num_threads(int(self.options["threads"]))
        model = load_checkpoint(self.checkpoint)[1] if self.checkpoint else self.spec.build()
        model = raw_pixel_module(model).to(self.device)
        if self.options["memory_format"] == "channels_last":
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._model = model.eval()
        self._stack.enter_context(torch.inference_mode())
        if self.options["compile"]:
            import torch._dynamo

            self._stack.enter_context(
                torch._dynamo.config.patch(fail_on_recompile_limit_hit=True))

    def _deactivate(self) -> None:
        self._stack.close()
        self._model = self._compiled = None

    def stage(self, x: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if self.options["memory_format"] == "channels_last":
            t = t.contiguous(memory_format=torch.channels_last)
        if self.options["compile"] and tuple(x.shape) != self._shape:
            # One static graph per batch size; a fresh cache so no shape counts twice
            # against dynamo's recompile limit.
            torch._dynamo.reset()
            self._compiled = torch.compile(self._model, dynamic=False)
            self._shape = tuple(x.shape)
        return t

    def run(self, staged: Any) -> Any:
        fn = self._compiled if self.options["compile"] else self._model
        try:
            return fn(staged)
        except RuntimeError as exc:
            text = str(exc)
            if "allocate" in text or "out of memory" in text:
                raise MemoryError(text.splitlines()[0]) from None
            if "recompile" in text.lower() or "cache_size_limit" in text:
                raise BenchError(
                    "torch.compile hit its recompile limit and would have fallen back to "
                    f"eager silently ({text.splitlines()[0]}): time fewer batch sizes per "
                    "run or drop --option torch.compile=true") from None
            raise

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output.detach().float().cpu().numpy())
