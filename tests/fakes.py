"""The test suite's one set of fake runners: a fake clock (the harness's stopping rules), a
fake GPU with device phases, and a scripted classifier (the accuracy check)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnn_deploy.backends.base import PhaseTimer, Runner, Signature


class _FakeRunner(Runner):
    """What every fake shares: a fake clock, a (N, 1, 28, 28) input, outputs as given."""

    backend = "fake"
    now_ns = 0

    def clock(self) -> int:
        return self.now_ns

    @property
    def label(self) -> str:
        return self.backend

    def _activate(self) -> None:
        return None

    @property
    def signature(self) -> Signature:
        return Signature("x", (None, 1, 28, 28))

    def stage(self, x: np.ndarray) -> Any:
        return x

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output)


class FakeClockRunner(_FakeRunner):
    """A runner whose every run advances a fake clock by a scripted number of ms."""

    def __init__(self, durations_ms: list[float]) -> None:
        super().__init__()
        self.now_ns = 0
        self.durations = list(durations_ms)
        self.runs = 0

    def run(self, staged: Any) -> Any:
        self.now_ns += int(self.durations[min(self.runs, len(self.durations) - 1)] * 1e6)
        self.runs += 1
        return staged


class FakeTimer(PhaseTimer):
    def __init__(self, runner: FakeClockRunner) -> None:
        self.runner = runner
        self.marks: list[tuple[str, int]] = []

    def mark(self, phase: str) -> None:
        if phase == "start":
            self.marks = []
        self.marks.append((phase, self.runner.now_ns))

    def elapsed_ms(self) -> dict[str, float]:
        return {name: (t - prev) / 1e6
                for (_, prev), (name, t) in zip(self.marks, self.marks[1:], strict=False)}


class FakeGpuRunner(FakeClockRunner):
    """Enqueue costs 0.1 ms of host time; the 'device' takes h2d 1 ms, compute 3, d2h 1."""

    def phase_timer(self) -> PhaseTimer | None:
        return FakeTimer(self)

    def run_phased(self, staged: Any, timer: PhaseTimer) -> Any:
        timer.mark("start")
        for phase, ms in (("h2d", 1.0), ("compute", 3.0), ("d2h", 1.0)):
            self.now_ns += int(ms * 1e6)
            timer.mark(phase)
        return staged


class ScriptedRunner(Runner):
    """Predicts ``classes(x)`` with a fixed batch, recording every batch it was given."""

    backend = "scripted"

    def __init__(self, classes: Any, fixed_batch: int | None = None) -> None:
        super().__init__()
        self.classes, self.fixed = classes, fixed_batch
        self.seen: list[int] = []

    @property
    def label(self) -> str:
        return "scripted"

    def _activate(self) -> None:
        return None

    @property
    def signature(self) -> Signature:
        return Signature("tiles", (self.fixed, 1, 28, 28))

    def stage(self, x: np.ndarray) -> Any:
        self.seen.append(len(x))
        return x

    def run(self, staged: Any) -> Any:
        return np.eye(10, dtype=np.float32)[self.classes(staged)]

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output)


def hide_gpus(monkeypatch: Any) -> None:
    """Make every backend's probe say its GPU targets are unusable, as on a machine without a
    GPU, so tests of that path run on GPU machines too."""
    from dataclasses import replace

    from cnn_deploy.backends import registry

    real = registry.backends()

    def cpu_only(entry: Any) -> Any:
        def probe() -> list[Any]:
            return [replace(a, usable=False, why="no GPU: CUDA sees no device (hidden by the test)")
                    if a.gpu else a for a in entry.probe()]
        return replace(entry, probe=probe)

    hidden = tuple(cpu_only(entry) for entry in real)
    monkeypatch.setattr(registry, "backends", lambda: hidden)


class AsyncGpuRunner(_FakeRunner):
    """A GPU whose work is asynchronous, on a fake clock: an enqueue costs ``enqueue_ms`` of
    host time and queues ``device_ms`` of device work (H2D 1 ms, compute, D2H 1 ms) behind
    whatever the device is still doing; waiting for a timer moves the host to its completion."""

    backend = "fake async gpu"

    def __init__(self, enqueue_ms: float, device_ms: float) -> None:
        super().__init__(device="cuda")
        self.enqueue_ms, self.device_ms = enqueue_ms, device_ms
        self.now_ns, self.device_free_ns = 0, 0

    def run(self, staged: Any) -> Any:
        raise AssertionError("a GPU runner is timed through run_phased")

    def phase_timer(self) -> PhaseTimer | None:
        return _AsyncTimer(self)

    def run_phased(self, staged: Any, timer: PhaseTimer) -> Any:
        assert isinstance(timer, _AsyncTimer)
        self.now_ns += int(self.enqueue_ms * 1e6)  # the work reaches the GPU when submitted
        start = max(self.now_ns, self.device_free_ns)
        self.device_free_ns = start + int(self.device_ms * 1e6)
        timer.done_ns = self.device_free_ns
        return staged

    def synchronize(self) -> None:
        self.now_ns = max(self.now_ns, self.device_free_ns)


class _AsyncTimer:
    def __init__(self, runner: AsyncGpuRunner) -> None:
        self.runner, self.done_ns = runner, 0

    def mark(self, phase: str) -> None:
        return None

    def elapsed_ms(self) -> dict[str, float]:
        self.runner.now_ns = max(self.runner.now_ns, self.done_ns)  # wait for this iteration
        compute = self.runner.device_ms - 2.0
        return {"h2d": 1.0, "compute": compute, "d2h": 1.0}


def graph_model(path: Any, node: str, inputs: dict[str, list[Any]], outputs: dict[str, list[Any]],
                **attributes: Any) -> Any:
    """A one-node float ONNX file (e.g. not an image classifier) at ``path``: ``inputs`` and
    ``outputs`` map names to shapes (a str is a dynamic dimension)."""
    import onnx
    from onnx import TensorProto, helper

    def values(spec: dict[str, list[Any]]) -> list[Any]:
        return [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in spec.items()]

    graph = helper.make_graph([helper.make_node(node, list(inputs), list(outputs), **attributes)],
                              "g", values(inputs), values(outputs))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
