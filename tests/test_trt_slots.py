"""Double-buffered TensorRT batches (backends/trt_slots.py) on a simulated GPU: host and
"device" memory are numpy buffers, copies are memmoves, the enqueue is a fake network, and every
stream wait and event record is logged. No GPU or TensorRT needed; the order is what matters."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest

from cnn_deploy import cuda
from cnn_deploy.backends import trt_slots


class Memory:
    def __init__(self, nbytes: int, stream: Any = None) -> None:
        self.data = np.zeros(max(1, nbytes), dtype=np.uint8)
        self.ptr = self.data.ctypes.data
        self.nbytes = nbytes
        self.closed = False

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.data[:count].view(dtype).reshape(shape)

    def close(self) -> None:
        self.closed = True


class Stream:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def wait(self, event: Event) -> None:
        self.log.append(f"{self.name} waits {event.name}")


class Event:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def record(self, stream: Stream) -> None:
        self.log.append(f"{self.name} on {stream.name}")

    def synchronize(self) -> None:
        self.log.append(f"host waits {self.name}")

    def close(self) -> None:
        return None


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> Any:
    log: list[str] = []
    monkeypatch.setattr(cuda, "HostBuffer", Memory)
    monkeypatch.setattr(cuda, "DeviceBuffer", Memory)

    def memcpy(dst: int, src: int, nbytes: int, kind: str, stream: Stream) -> None:
        ctypes.memmove(dst, src, nbytes)
        log.append(f"{kind} on {stream.name}")

    monkeypatch.setattr(cuda, "memcpy_async", memcpy)
    return log


def test_two_slots_overlap_and_every_reuse_waits_for_the_last_use(gpu: list[str]) -> None:
    log = gpu
    slots = [trt_slots.Slot(tuple(Event(f"{what}{k}", log) for what in ("copied", "computed",
                                                                          "drained")))
             for k in range(2)]
    addresses: dict[str, int] = {}
    compute, streams = Stream("compute", log), (Stream("in", log), Stream("out", log))
    tiles = 4

    def enqueue() -> None:
        """The 'network': logit 1 at class = the tile's first pixel."""
        log.append("enqueue on compute")
        x = np.ctypeslib.as_array((ctypes.c_float * (tiles * 4)).from_address(addresses["x"]))
        y = np.ctypeslib.as_array((ctypes.c_float * (tiles * 10)).from_address(addresses["y"]))
        y[:] = 0
        y.reshape(tiles, 10)[np.arange(tiles), x.reshape(tiles, 4)[:, 0].astype(int)] = 1

    def submit(batch: np.ndarray, k: int) -> None:
        slot = slots[k]
        slot.ensure(tiles, {"x": batch.nbytes, "y": tiles * 10 * 4}, None)
        trt_slots.submit(slot, batch, input_name="x", input_dtype=np.dtype(np.float32),
                         outputs=[("y", np.dtype(np.float32), (tiles, 10))],
                         set_address=addresses.__setitem__, enqueue=enqueue, compute=compute,
                         streams=streams)

    batches = [np.full((tiles, 1, 2, 2), v, np.float32) for v in (3, 7, 5)]
    submit(batches[0], 0)
    submit(batches[1], 1)
    first = trt_slots.collect(slots[0], "y").argmax(axis=1)
    log.append("-- slot 0 again")
    submit(batches[2], 0)
    second = trt_slots.collect(slots[1], "y").argmax(axis=1)
    third = trt_slots.collect(slots[0], "y").argmax(axis=1)
    assert first.tolist() == [3] * 4 and second.tolist() == [7] * 4 and third.tolist() == [5] * 4

    # batch 1's copy-in is queued before batch 0 is waited for: the copy overlaps the compute
    assert log.index("copied1 on in") < log.index("host waits drained0")
    first_use = log[:log.index("copied1 on in")]
    assert first_use == ["h2d on in", "copied0 on in", "compute waits copied0", "enqueue on compute",
                         "computed0 on compute", "out waits computed0", "d2h on out",
                         "drained0 on out", "h2d on in"]
    reuse = log[log.index("-- slot 0 again") + 1:]
    # the pinned input is refilled after its copy, the device input after the compute that
    # read it, the device output after its copy-out
    assert reuse[:7] == ["host waits copied0", "in waits computed0", "h2d on in", "copied0 on in",
                         "compute waits copied0", "compute waits drained0", "enqueue on compute"]


def test_a_larger_batch_grows_a_slot_after_its_last_copy_out(gpu: list[str]) -> None:
    log = gpu
    slot = trt_slots.Slot(tuple(Event(n, log) for n in ("copied", "computed", "drained")))
    slot.ensure(4, {"x": 64}, None)
    old = list(slot.host.values())
    slot.ensure(2, {"x": 32}, None)
    assert list(slot.host.values()) == old  # never shrunk
    slot.used = True
    slot.ensure(8, {"x": 128}, None)
    assert log == ["host waits drained"] and all(b.closed for b in old)
    assert slot.capacity == 8 and slot.host["x"].nbytes == 128


def test_stream_ordered_buffers_are_ready_before_the_input_stream_touches_them(
        gpu: list[str]) -> None:
    """cudaMallocAsync memory belongs to the compute stream until it is synchronised."""
    log = gpu
    slot = trt_slots.Slot(tuple(Event(n, log) for n in ("copied", "computed", "drained")))

    class Compute(Stream):
        def synchronize(self) -> None:
            self.log.append("compute synchronised")

    slot.ensure(4, {"x": 64, "y": 160}, Compute("compute", log))
    assert log == ["compute synchronised"]


def test_tensorrt_refuses_to_classify_without_transfers(tmp_path: Any) -> None:
    from cnn_deploy.backends.tensorrt import TrtRunner
    from cnn_deploy.errors import BenchError

    runner = TrtRunner(tmp_path / "net.plan", {"transfers": False})
    with pytest.raises(BenchError, match="transfers=false times the compute alone"):
        runner.infer(np.zeros((1, 1, 28, 28), np.float32))
