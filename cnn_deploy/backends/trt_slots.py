"""Double-buffered TensorRT batches for a stream: each slot has its own pinned host and device
buffers and three events, so the copy-in of batch k + 1 runs on the input stream while batch k
computes, and its copy-out on the output stream (the three streams of trtexec's Iteration,
sampleInference.cpp; the buffers of jetson-inference's and DeepStream's batch pools).

Order per slot, enforced with CUDA events rather than host waits:
``in``: wait(computed of the slot's last batch: its device input is no longer read) -> H2D ->
record ``copied``; compute: wait(copied), wait(drained of the slot's last batch: its device
output was copied out) -> enqueue -> record ``computed``; ``out``: wait(computed) -> D2H ->
record ``drained``. The host refills a slot's pinned input only after its last ``copied``,
and reads its pinned output after ``drained``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Slot:
    """One buffer set; ``capacity`` is the batch its buffers hold."""

    events: tuple[Any, Any, Any]  # copied, computed, drained (cuda.Event)
    host: dict[str, Any] = field(default_factory=dict)  # tensor name -> cuda.HostBuffer
    device: dict[str, Any] = field(default_factory=dict)  # tensor name -> cuda.DeviceBuffer
    views: dict[str, np.ndarray] = field(default_factory=dict)  # outputs, shaped
    capacity: int = 0
    used: bool = False

    @property
    def copied(self) -> Any:
        return self.events[0]

    @property
    def computed(self) -> Any:
        return self.events[1]

    @property
    def drained(self) -> Any:
        return self.events[2]

    def ensure(self, batch: int, nbytes: dict[str, int], stream: Any | None) -> None:
        """Buffers for ``batch`` (``nbytes`` per tensor at that batch); grown, never shrunk."""
        from cnn_deploy import cuda

        if batch <= self.capacity:
            return
        if self.used:
            self.drained.synchronize()  # nothing of the last batch still uses the old buffers
        self.free()
        for name, size in nbytes.items():
            self.host[name] = cuda.HostBuffer(size)
            self.device[name] = cuda.DeviceBuffer(size, stream)
        if stream is not None:  # stream-ordered memory, first touched on the input stream
            stream.synchronize()
        self.capacity = batch

    def free(self) -> None:
        for buf in (*self.host.values(), *self.device.values()):
            buf.close()
        self.host, self.device, self.views, self.capacity = {}, {}, {}, 0

    def close(self) -> None:
        self.free()
        for event in self.events:
            event.close()


def make_slots(count: int, blocking: bool) -> list[Slot]:
    from cnn_deploy import cuda

    def event() -> Any:
        return cuda.Event(blocking, timing=False)  # ordering only: no timestamps

    return [Slot((event(), event(), event())) for _ in range(count)]


def submit(slot: Slot, x: np.ndarray, *, input_name: str, input_dtype: np.dtype,
           outputs: list[tuple[str, np.dtype, tuple[int, ...]]], set_address: Callable[[str, int], None],
           enqueue: Callable[[], None], compute: Any, streams: tuple[Any, Any]) -> None:
    """Copy ``x`` in, enqueue, copy the outputs out, all on the GPU's queues; returns at once.
    The context's input shape is set and the slot's buffers are large enough (``Slot.ensure``)."""
    from cnn_deploy import cuda

    in_stream, out_stream = streams
    if slot.used:
        slot.copied.synchronize()  # the pinned input went over: refill it
    view = slot.host[input_name].array(tuple(x.shape), input_dtype)
    np.copyto(view, x)
    if slot.used:
        in_stream.wait(slot.computed)  # the last batch's compute no longer reads the input
    cuda.memcpy_async(slot.device[input_name].ptr, view.ctypes.data, view.nbytes, "h2d", in_stream)
    slot.copied.record(in_stream)
    compute.wait(slot.copied)
    if slot.used:
        compute.wait(slot.drained)  # the last batch's outputs left the device buffers
    set_address(input_name, slot.device[input_name].ptr)
    for name, _, _ in outputs:
        set_address(name, slot.device[name].ptr)
    enqueue()
    slot.computed.record(compute)
    out_stream.wait(slot.computed)
    for name, dtype, shape in outputs:
        out = slot.views[name] = slot.host[name].array(shape, dtype)
        cuda.memcpy_async(out.ctypes.data, slot.device[name].ptr, out.nbytes, "d2h", out_stream)
    slot.drained.record(out_stream)
    slot.used = True


def collect(slot: Slot, first_output: str) -> np.ndarray:
    """Wait for the slot's copy-out; its first output, copied out of pinned memory."""
    slot.drained.synchronize()
    return np.array(slot.views[first_output], copy=True)
