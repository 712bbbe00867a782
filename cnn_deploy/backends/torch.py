"""The PyTorch backend: eager (the thesis-style baseline) or ``torch.compile`` opt-in, on the
CPU or on a CUDA GPU (``device="cuda"``), optionally replayed as a CUDA graph.

The module timed is the deployed one: raw 0..255 pixels in, normalisation folded into the
first conv, exactly what the ONNX file holds. Channels-last is the default memory format
(1.6-3.9x faster than NCHW on a 2-core CPU, because of max-pool); the baseline row stays
"torch eager, NCHW, defaults" on the same device.

On CUDA a batch is what trtexec times: copy a pinned host batch to the device, run the
network, copy the logits back into pinned host memory, all enqueued on the current stream
with CUDA events between the phases (:func:`torch_event_timer`), so the harness reads H2D,
compute and D2H device times apart from the host's end-to-end latency.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.arch import IN_CHANNELS, TILE, NetSpec
from cnn_deploy.backends.base import (
    MAX_THREADS,
    Availability,
    Backend,
    LayerTime,
    Option,
    PhaseTimer,
    Runner,
    Signature,
    Target,
)
from cnn_deploy.errors import BackendError, BenchError

MEMORY_FORMATS = ("channels_last", "contiguous")
UNTRAINED_SEED = 0  # cnn_deploy.export.export_spec's default seed
# The fastest known settings on a CPU, and the thesis-style baseline they are compared with.
DEFAULT_OPTIONS: dict[str, Any] = {"memory_format": "channels_last", "compile": False,
                                   "threads": None, "device": "cpu", "cuda_graph": False}
BASELINE_OPTIONS: dict[str, Any] = {**DEFAULT_OPTIONS, "memory_format": "contiguous"}
# Eager iterations on a side stream before a CUDA graph capture (cuDNN/cuBLAS set-up and
# autotuning must not happen inside the capture; the PyTorch CUDA-graphs docs warm up so).
GRAPH_WARMUP_ITERATIONS = 3


def is_baseline(options: dict[str, Any]) -> bool:
    """True for the thesis-style baseline settings on whatever device they run."""
    return all(options.get(k) == v for k, v in BASELINE_OPTIONS.items() if k != "device")


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendError("torch is not installed: pip install torch "
                           "(the CPU build: pip install torch==2.13.0)") from None
    return torch


class TorchRunner(Runner):
    """``options``: memory_format, compile (bool), threads (None = torch's default), device
    (cpu | cuda | cuda:N), cuda_graph (bool, CUDA only: capture the forward once per batch
    size after a warm-up and replay it)."""

    backend = "torch"

    def __init__(self, spec: NetSpec, checkpoint: Path | None = None,
                 options: dict[str, Any] | None = None) -> None:
        # Parsed and checked as the command line's are: unknown keys and bad values refused.
        super().__init__(BACKEND.resolve(options or {}))
        self.spec, self.checkpoint = spec, checkpoint
        self.device = str(self.options["device"])
        self.cuda = self.device.startswith("cuda")
        if self.options["cuda_graph"] and not self.cuda:
            raise BackendError("torch.cuda_graph=true needs torch.device=cuda")
        if self.options["cuda_graph"] and self.options["compile"]:
            raise BackendError("choose torch.cuda_graph=true or torch.compile=true, not both")
        self.baseline = is_baseline(self.options)
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
        mode = ("compiled" if self.options["compile"]
                else "cuda-graph" if self.options["cuda_graph"] else "eager")
        threads = self.options["threads"]
        return f"torch {mode}{where} {fmt}" + (f" {threads}t" if threads else "")

    @property
    def signature(self) -> Signature:
        return Signature("tiles", (None, IN_CHANNELS, TILE, TILE), "float32", "logits")

    def _activate(self) -> None:
        torch = import_torch()
        from cnn_deploy.export import raw_pixel_module
        from cnn_deploy.train import load_checkpoint

        if self.cuda and not torch.cuda.is_available():
            raise BackendError("torch cannot see a CUDA GPU here (a CPU-only torch build, or no "
                               "driver): drop torch.device=cuda, or install a CUDA build of torch")
        if self.cuda:
            index = torch.device(self.device).index
            count = torch.cuda.device_count()
            if index is not None and index >= count:
                raise BackendError(f"torch.device={self.device} but torch sees {count} GPU(s) "
                                   f"(cuda:0..cuda:{count - 1}; CUDA_VISIBLE_DEVICES renumbers "
                                   "them)")
            # Make it the current device while the runner is active: the CUDA events, the
            # current stream and graph captures are per device.
            self._stack.enter_context(torch.cuda.device(self.device))
        if self.options["threads"]:
            before = torch.get_num_threads()  # process-wide: put back when this runner ends
            self._stack.callback(torch.set_num_threads, before)
            torch.set_num_threads(int(self.options["threads"]))
        # Untrained: the seed every untrained export uses, so this row runs the same weights.
        model = (load_checkpoint(self.checkpoint)[1] if self.checkpoint
                 else self.spec.build(UNTRAINED_SEED))
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

        self._compile_for(tuple(x.shape))
        if self.cuda:
            return self._stage_cuda(x)
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        if self.options["memory_format"] == "channels_last":
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _compile_for(self, shape: tuple[int, ...]) -> None:
        if not self.options["compile"] or shape == self._shape:
            return
        import torch

        # One static graph per batch size; a fresh cache so no shape counts twice
        # against dynamo's recompile limit.
        torch._dynamo.reset()
        self._compiled = torch.compile(self._model, dynamic=False)
        self._shape = shape

    def run(self, staged: Any) -> Any:
        if isinstance(staged, _CudaBatch):
            return self._enqueue(staged, None)
        return self._forward(staged)

    def _forward(self, t: Any) -> Any:
        fn = self._compiled if self.options["compile"] else self._model
        try:
            return fn(t)
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

    # -- CUDA -------------------------------------------------------------------
    def phase_timer(self) -> PhaseTimer | None:
        return torch_event_timer() if self.cuda else None

    def run_phased(self, staged: Any, timer: PhaseTimer) -> Any:
        if not isinstance(staged, _CudaBatch):
            return super().run_phased(staged, timer)
        return self._enqueue(staged, timer)

    def _stage_cuda(self, x: np.ndarray) -> _CudaBatch:
        """Pinned host input, device input (in the runner's memory format), pinned host output;
        with cuda_graph, the forward captured on the device input after a warm-up."""
        import torch

        fmt = (torch.channels_last if self.options["memory_format"] == "channels_last"
               else torch.contiguous_format)
        try:
            host = torch.from_numpy(np.ascontiguousarray(x)).pin_memory()
            device = torch.empty(tuple(x.shape), dtype=host.dtype, device=self.device,
                                 memory_format=fmt)
            device.copy_(host)
            out = self._forward(device)  # the logits' shape; also a first warm-up
            host_out = torch.empty(tuple(out.shape), dtype=out.dtype, pin_memory=True)
            batch = _CudaBatch(host, device, host_out)
            if self.options["cuda_graph"]:
                batch.graph, batch.static_out = self._capture(device)
            torch.cuda.synchronize()
        except RuntimeError as exc:
            text = str(exc)
            if "out of memory" in text or "allocate" in text:
                raise MemoryError(text.splitlines()[0]) from None
            raise
        return batch

    def _capture(self, static_in: Any) -> tuple[Any, Any]:
        """Warm up on a side stream, then capture one forward into a CUDA graph."""
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_ITERATIONS):
                self._model(static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._model(static_in)
        return graph, static_out

    def _enqueue(self, batch: _CudaBatch, timer: PhaseTimer | None) -> Any:
        """H2D, forward (or graph replay), D2H, all asynchronous on the current stream."""
        mark = timer.mark if timer is not None else _no_mark
        mark("start")
        batch.device.copy_(batch.host, non_blocking=True)
        mark("h2d")
        if batch.graph is not None:
            batch.graph.replay()
            out = batch.static_out
        else:
            out = self._forward(batch.device)
        mark("compute")
        batch.host_out.copy_(out, non_blocking=True)
        mark("d2h")
        return batch.host_out

    def synchronize(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)  # this runner's GPU, not the current one

    def free_memory_bytes(self) -> int | None:
        if not self.cuda:
            return None
        import torch

        # the index (None: the current device, which _activate made this one): torch < 2.5
        # refuses a bare "cuda" here
        return int(torch.cuda.mem_get_info(torch.device(self.device).index)[0])

    # -- per-layer profiling -----------------------------------------------------
    def profile_layers(self, x: np.ndarray, runs: int) -> list[LayerTime]:
        """``torch.profiler`` (CPU activity) over ``runs`` runs after one unprofiled warm-up,
        each run inside ``record_function("cnndeploy_run<i>")``. Eager mode is unfused: one
        aten op per module call (conv2d, relu, max_pool2d, flatten, linear)."""
        from torch.profiler import ProfilerActivity, profile, record_function

        if not self._active:
            raise RuntimeError("use the runner inside a `with` block")
        if self.cuda:
            raise BackendError("per-layer profiling of torch on CUDA is not implemented: "
                               "profile on the CPU, or the TensorRT engine with --engine")
        self.check_input(x)
        staged = self.stage(x)
        self.run(staged)  # warm-up (and compilation): outside the profiler
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for i in range(runs):
                with record_function(f"{RUN_MARK}{i}"):
                    self.run(staged)
        return torch_layer_times(prof.events())

    def to_numpy(self, output: Any) -> np.ndarray:
        # A pinned host buffer is reused by the next batch: hand out a copy.
        return np.array(output.detach().float().cpu().numpy(), copy=True)


RUN_MARK = "cnndeploy_run"


def torch_layer_times(events: Any) -> list[LayerTime]:
    """Profiler events -> one LayerTime per top-level aten op per run.

    Only the direct children of each ``cnndeploy_run<i>`` range count, with their total
    (not self) CPU time: each is one module call (aten::conv2d, aten::linear, ...), and its
    total already holds the ops it dispatches to (convolution -> mkldnn_convolution, addmm,
    the clone inside flatten), so nothing is counted twice and no time is split off into
    dispatcher-level names. The layer is named ``<op>#<k>``, its k-th call in the run.
    """
    out: list[LayerTime] = []
    for event in events:
        if event.cpu_parent is not None or not event.name.startswith(RUN_MARK):
            continue
        run = int(event.name.removeprefix(RUN_MARK))
        seen: dict[str, int] = {}
        for child in sorted(event.cpu_children, key=lambda e: e.time_range.start):
            k = seen[child.name] = seen.get(child.name, -1) + 1
            out.append(LayerTime(f"{child.name}#{k}", child.name,
                                 float(child.cpu_time_total) / 1000.0, run))
    return sorted(out, key=lambda t: t.run)


@dataclass
class _CudaBatch:
    host: Any  # pinned (N, 1, 28, 28) float32
    device: Any  # the same on the GPU, in the runner's memory format
    host_out: Any  # pinned (N, 10) logits
    graph: Any = None  # torch.cuda.CUDAGraph when cuda_graph
    static_out: Any = None  # the graph's output tensor


def _no_mark(phase: str) -> None:
    return None


def torch_event_timer() -> PhaseTimer:
    """The one phase timer (:class:`cnn_deploy.cuda.EventTimer`) on ``torch.cuda.Event``s
    recorded on the current stream."""
    import torch

    from cnn_deploy.cuda import EventTimer

    return EventTimer(new_event=lambda: torch.cuda.Event(enable_timing=True),
                      record=lambda event: event.record(torch.cuda.current_stream()),
                      elapsed=lambda start, end: start.elapsed_time(end))


# -- the registry entry ------------------------------------------------------------
def probe() -> list[Availability]:
    if importlib.util.find_spec("torch") is None:
        why = "package missing: pip install torch==2.13.0 (CPU build)"
        return [Availability("torch", "cpu", False, why),
                Availability("torch", "cuda", False, why, gpu=True)]
    import torch

    rows = [Availability("torch", "cpu", True, f"torch {torch.__version__}, "
                         f"{torch.get_num_threads()} threads")]
    if torch.version.cuda is None:
        rows.append(Availability("torch", "cuda", False,
                                 "this torch is a CPU-only build (no CUDA)", gpu=True))
    elif not torch.cuda.is_available():
        rows.append(Availability("torch", "cuda", False, "no GPU: torch sees no CUDA device "
                                 "(driver missing or no GPU)", gpu=True))
    else:
        rows.append(Availability("torch", "cuda", True, torch.cuda.get_device_name(0), gpu=True))
    return rows


def _device_why(device: str) -> str | None:
    return None if re.fullmatch(r"cpu|cuda(:\d+)?", device) else "use cpu, cuda or cuda:N"


def _runner(target: Target, options: dict[str, Any]) -> Runner:
    assert target.spec is not None  # the registry checked `needs`
    return TorchRunner(target.spec, target.checkpoint, options)


BACKEND = Backend(
    name="torch",
    summary="PyTorch eager (the baseline) or torch.compile, on the CPU or a CUDA GPU",
    needs="spec",
    probe=probe,
    runner=_runner,
    options=(
        Option("memory_format", "str", DEFAULT_OPTIONS["memory_format"],
               "the input and weights' memory format", choices=MEMORY_FORMATS),
        Option("compile", "bool", False, "torch.compile the module (one graph per batch size)"),
        Option("threads", "int", None, "intra-op threads (torch's default when not set)",
               minimum=1, maximum=MAX_THREADS, optional=True),
        Option("device", "str", "cpu", "cpu, cuda or cuda:N", check=_device_why),
        Option("cuda_graph", "bool", False, "replay the forward as a CUDA graph (CUDA only)"),
    ),
    aliases=("pytorch",),
    devices=("cpu", "cuda"),
    profiles=True,
    device_options=lambda device: {"device": device},
    probe_target=lambda options: "cpu" if options.get("device", "cpu") == "cpu" else "cuda",
    default=2,
    baseline=lambda device: {**BASELINE_OPTIONS, "device": device},
    packages=("torch",),
    fuses=False,
    # compile is left out: a compile per batch size costs minutes on a small CPU
    tune_space={"memory_format": MEMORY_FORMATS, "threads": (None, 1)},
    profile_graph=lambda unfused, options: ({}, "torch eager is unfused already: one aten op per "
                                            "module call" + (" (--unfused changes nothing)"
                                                             if unfused else "")),
)

