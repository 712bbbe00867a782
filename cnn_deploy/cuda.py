"""Small CUDA plumbing on cuda-python's runtime bindings: streams, events, buffers, graphs.

cuda-python is imported lazily (``cuda.bindings.runtime``; ``cuda.cudart`` on releases
before 12.6), so this module imports anywhere; a missing package raises
:class:`BackendError` with the install command on first use. Every binding returns a
tuple whose first item is a ``cudaError_t``; :func:`check` turns a failure into a
:class:`BackendError` naming the error. Objects that own CUDA memory or handles have
``close()`` and are context managers; closing twice is harmless.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnn_deploy.errors import BackendError

INSTALL_HINT = "pip install cuda-python"
# Names this module calls on the runtime bindings; tests check them against cuda-python 12 and 13.
CUDA_API = (
    "cudaError_t", "cudaGetErrorString", "cudaGetDeviceCount", "cudaGetDevice",
    "cudaGetDeviceProperties", "cudaStreamCreateWithFlags", "cudaStreamNonBlocking",
    "cudaStreamSynchronize", "cudaStreamDestroy", "cudaEventCreate", "cudaEventRecord",
    "cudaEventSynchronize", "cudaEventElapsedTime", "cudaEventDestroy", "cudaMallocHost",
    "cudaFreeHost", "cudaMalloc", "cudaFree", "cudaMallocAsync", "cudaFreeAsync",
    "cudaMemcpyAsync", "cudaMemcpyKind", "cudaStreamBeginCapture", "cudaStreamCaptureMode",
    "cudaStreamEndCapture", "cudaGraphInstantiateWithFlags", "cudaGraphLaunch",
    "cudaGraphExecDestroy", "cudaGraphDestroy", "cudaDriverGetVersion", "cudaRuntimeGetVersion",
    "cudaDeviceGetPCIBusId", "cudaMemGetInfo", "cudaSetDevice", "cudaEventCreateWithFlags",
    "cudaEventBlockingSync", "cudaStreamWaitEvent", "cudaEventDisableTiming",
)
_NO_GPU = ("cudaErrorNoDevice", "cudaErrorInsufficientDriver")
_COPY_KINDS = {"h2d": "cudaMemcpyHostToDevice", "d2h": "cudaMemcpyDeviceToHost",
               "d2d": "cudaMemcpyDeviceToDevice"}
_CAPTURE_MODES = {"global": "cudaStreamCaptureModeGlobal",
                  "thread_local": "cudaStreamCaptureModeThreadLocal",
                  "relaxed": "cudaStreamCaptureModeRelaxed"}


@functools.cache
def runtime() -> Any:
    """The CUDA runtime bindings module, or a BackendError saying how to install them."""
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as rt  # older cuda-python
        except ImportError:
            raise BackendError(f"cuda-python is not installed: {INSTALL_HINT}") from None
    return rt


def check(result: Any, what: str = "CUDA call") -> Any:
    """Unpack ``(cudaError_t, *values)``: raise on failure, else return the value(s)."""
    rt = runtime()
    err, values = result[0], tuple(result[1:])
    if err != rt.cudaError_t.cudaSuccess:
        name = str(getattr(err, "name", err))
        text = rt.cudaGetErrorString(err)[1]
        hint = ": no usable NVIDIA GPU or driver here" if name in _NO_GPU else ""
        desc = text.decode() if isinstance(text, bytes) else str(text)
        raise BackendError(f"{what} failed with {name} ({desc}){hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


# -- devices -------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceProps:
    index: int
    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    memory_bytes: int
    l2_cache_bytes: int = 0  # cudaDeviceProp::l2CacheSize (0: not reported)


def device_count() -> int:
    """Visible CUDA devices; 0 where there is no GPU or no driver at all. A driver too old for
    this cuda-python's CUDA major (cudaErrorInsufficientDriver with a driver present) is not
    "no GPU": it raises, naming both versions and the extra that matches the driver."""
    rt = runtime()
    result = rt.cudaGetDeviceCount()
    error = str(getattr(result[0], "name", ""))
    if error in _NO_GPU:
        driver = driver_cuda_version() if error == "cudaErrorInsufficientDriver" else None
        needed = runtime_cuda_version()
        # within a CUDA major, minor-version compatibility lets an older driver run: only a
        # driver of an older major is "too old"
        if driver is not None and needed is not None and driver // 1000 < needed // 1000:
            raise BackendError(
                f"the NVIDIA driver supports CUDA up to {_version(driver)} but this cuda-python "
                f"is built for CUDA {_version(needed)}: install the stack for your driver "
                f"(pip install -e '.[gpu-cu{driver // 1000}]') or update the driver")
        return 0
    return int(check(result, "cudaGetDeviceCount"))


def driver_cuda_version() -> int | None:
    """The newest CUDA the installed driver supports (12040 = 12.4); None with no driver."""
    version = check(runtime().cudaDriverGetVersion(), "cudaDriverGetVersion")
    return int(version) or None


def runtime_cuda_version() -> int | None:
    """The CUDA version these bindings are built for (13040 = 13.4)."""
    try:
        return int(check(runtime().cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")) or None
    except BackendError:
        return None


def pci_bus_id(index: int) -> str | None:
    """CUDA device ``index``'s PCI bus id ('0000:17:00.0'), the key NVML is asked by (NVML's
    own indices follow PCI order, CUDA's follow CUDA_DEVICE_ORDER and CUDA_VISIBLE_DEVICES);
    None where cuda-python or the device is missing."""
    try:
        raw = check(runtime().cudaDeviceGetPCIBusId(16, index), f"cudaDeviceGetPCIBusId({index})")
    except BackendError:
        return None
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return text.split("\0")[0].strip() or None


def memory_info(index: int | None = None) -> tuple[int, int]:
    """(free, total) bytes of device memory on device ``index`` (the current one if None)."""
    rt = runtime()
    if index is not None:
        check(rt.cudaSetDevice(index), f"cudaSetDevice({index})")
    free, total = check(rt.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def device_properties(index: int | None = None) -> DeviceProps:
    """Name, compute capability, SMs and memory of device ``index`` (the current one if None)."""
    i = int(check(runtime().cudaGetDevice(), "cudaGetDevice")) if index is None else index
    prop = check(runtime().cudaGetDeviceProperties(i), f"cudaGetDeviceProperties({i})")
    raw = prop.name
    name = raw.split(b"\0")[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return DeviceProps(i, name.strip(), (int(prop.major), int(prop.minor)),
                       int(prop.multiProcessorCount), int(prop.totalGlobalMem),
                       int(getattr(prop, "l2CacheSize", 0) or 0))


# -- streams and events --------------------------------------------------------------
class _Owned:
    """Base for handles freed by ``close()``; usable as a context manager."""

    def close(self) -> None: ...

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stream(_Owned):
    """A non-blocking CUDA stream; ``handle`` is the integer TensorRT's enqueue takes."""

    def __init__(self) -> None:
        rt = runtime()
        self.raw: Any = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                              "cudaStreamCreateWithFlags")

    @property
    def handle(self) -> int:
        return int(self.raw)

    def synchronize(self) -> None:
        check(runtime().cudaStreamSynchronize(self.raw), "cudaStreamSynchronize")

    def wait(self, event: Event) -> None:
        """Work enqueued on this stream from now on starts after ``event`` completes."""
        check(runtime().cudaStreamWaitEvent(self.raw, event.raw, 0), "cudaStreamWaitEvent")

    def close(self) -> None:
        if self.raw is not None:
            raw, self.raw = self.raw, None
            check(runtime().cudaStreamDestroy(raw), "cudaStreamDestroy")


class Event(_Owned):
    """A timing event; ``record`` it on a stream, then ``elapsed_ms(start, end)``. ``blocking``:
    waiting on it sleeps the host thread (cudaEventBlockingSync, trtexec's default) instead of
    spinning (trtexec --useSpinWait). ``timing=False``: an event only for ordering streams
    (cudaEventDisableTiming: cheaper to record and wait on)."""

    def __init__(self, blocking: bool = False, timing: bool = True) -> None:
        rt = runtime()
        if blocking or not timing:  # an event only for ordering skips the timestamp
            flags = (int(rt.cudaEventBlockingSync) if blocking else 0) | (
                0 if timing else int(rt.cudaEventDisableTiming))
            self.raw: Any = check(rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")
        else:
            self.raw = check(rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        check(runtime().cudaEventRecord(self.raw, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        check(runtime().cudaEventSynchronize(self.raw), "cudaEventSynchronize")

    def close(self) -> None:
        if self.raw is not None:
            raw, self.raw = self.raw, None
            check(runtime().cudaEventDestroy(raw), "cudaEventDestroy")


def elapsed_ms(start: Event, end: Event) -> float:
    """Device time between two recorded events (``end`` must have completed)."""
    return float(check(runtime().cudaEventElapsedTime(start.raw, end.raw), "cudaEventElapsedTime"))


class EventTimer(_Owned):
    """The one device phase timer (a ``PhaseTimer``): one reusable event per phase name.

    ``mark("start")`` begins an iteration; every later ``mark(name)`` ends phase ``name``;
    after a synchronise ``elapsed_ms()`` gives each phase's device time. Events come from
    ``new_event`` and are recorded with ``record``; by default cuda-python events on
    ``stream``. The torch backend passes ``torch.cuda.Event`` and the current stream.
    """

    def __init__(self, stream: Stream | None = None, *,
                 new_event: Callable[[], Any] | None = None,
                 record: Callable[[Any], None] | None = None,
                 elapsed: Callable[[Any, Any], float] | None = None,
                 wait: Callable[[Any], None] | None = None) -> None:
        self.stream = stream
        self._new = new_event or Event
        self._record = record or (lambda event: event.record(self.stream))
        self._elapsed = elapsed or elapsed_ms
        self._wait = wait or (lambda event: event.synchronize())
        self._events: dict[str, Any] = {}
        self._order: list[str] = []

    def mark(self, phase: str, stream: Stream | None = None) -> Any:
        """Record phase ``phase``'s end (on ``stream`` where given, else the timer's);
        returns the event, for another stream to wait on."""
        if phase == "start":
            self._order = []
        event = self._events.get(phase)
        if event is None:  # created on first use, then reused every iteration
            event = self._events[phase] = self._new()
        if stream is None:
            self._record(event)
        else:
            event.record(stream)
        self._order.append(phase)
        return event

    def elapsed_ms(self) -> dict[str, float]:
        if not self._order:
            return {}
        self._wait(self._events[self._order[-1]])
        return {b: float(self._elapsed(self._events[a], self._events[b]))
                for a, b in zip(self._order, self._order[1:], strict=False)}

    def close(self) -> None:
        events, self._events, self._order = self._events, {}, []
        for event in events.values():
            if hasattr(event, "close"):
                event.close()


# -- memory and copies ----------------------------------------------------------------
class HostBuffer(_Owned):
    """Page-locked host memory (fast, asynchronous copies); ``array()`` views it as numpy."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr: int = int(check(runtime().cudaMallocHost(max(1, self.nbytes)),
                                  f"cudaMallocHost({self.nbytes} bytes)"))

    def array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A numpy view of the first bytes; valid only until ``close()``."""
        if not self.ptr:
            raise RuntimeError("host buffer is closed")
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dt.itemsize > self.nbytes:
            raise ValueError(f"{shape} {dt} needs {count * dt.itemsize} bytes; buffer has "
                             f"{self.nbytes}")
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.ptr)
        return np.ctypeslib.as_array(raw)[: count * dt.itemsize].view(dt).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(runtime().cudaFreeHost(ptr), "cudaFreeHost")


class DeviceBuffer(_Owned):
    """Device memory; with ``stream`` it is stream-ordered (cudaMallocAsync/cudaFreeAsync)."""

    def __init__(self, nbytes: int, stream: Stream | None = None) -> None:
        rt = runtime()
        self.nbytes, self.stream = int(nbytes), stream
        size = max(1, self.nbytes)
        result = rt.cudaMalloc(size) if stream is None else rt.cudaMallocAsync(size, stream.raw)
        self.ptr: int = int(check(result, f"device allocation of {self.nbytes} bytes"))

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            rt = runtime()
            if self.stream is None or self.stream.raw is None:
                check(rt.cudaFree(ptr), "cudaFree")
            else:
                check(rt.cudaFreeAsync(ptr, self.stream.raw), "cudaFreeAsync")


def memcpy_async(dst: int, src: int, nbytes: int, kind: str, stream: Stream) -> None:
    """Enqueue a copy of ``nbytes`` on ``stream``; ``kind`` is 'h2d', 'd2h' or 'd2d'."""
    rt = runtime()
    check(rt.cudaMemcpyAsync(dst, src, nbytes, getattr(rt.cudaMemcpyKind, _COPY_KINDS[kind]),
                             stream.raw), f"cudaMemcpyAsync ({kind}, {nbytes} bytes)")


# -- graphs -----------------------------------------------------------------------------
class Graph(_Owned):
    """Work captured from a stream once, replayed with one ``launch``."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._graph: Any = None
        self._exec: Any = None

    @contextlib.contextmanager
    def capture(self, mode: str = "thread_local") -> Iterator[Graph]:
        """Record what the block enqueues on the stream (nothing runs), then instantiate."""
        rt = runtime()
        self.close()
        check(rt.cudaStreamBeginCapture(self.stream.raw,
                                        getattr(rt.cudaStreamCaptureMode, _CAPTURE_MODES[mode])),
              "cudaStreamBeginCapture")
        try:
            yield self
        except BaseException:
            # End the capture (or the stream stays unusable) but keep the block's error: an
            # error in the block invalidates the capture, and EndCapture's own error
            # (cudaErrorStreamCaptureInvalidated) would hide the cause.
            result = rt.cudaStreamEndCapture(self.stream.raw)
            if result[0] == rt.cudaError_t.cudaSuccess and result[1] is not None:
                rt.cudaGraphDestroy(result[1])
            raise
        self._graph = check(rt.cudaStreamEndCapture(self.stream.raw), "cudaStreamEndCapture")
        # cudaGraphInstantiateWithFlags(graph, flags) has the same form in cuda-python 11.x,
        # 12.x and 13.x; cudaGraphInstantiate's arguments changed with CUDA 12.
        self._exec = check(rt.cudaGraphInstantiateWithFlags(self._graph, 0),
                           "cudaGraphInstantiateWithFlags")

    @property
    def ready(self) -> bool:
        return self._exec is not None

    def launch(self) -> None:
        if self._exec is None:
            raise RuntimeError("graph not captured")
        check(runtime().cudaGraphLaunch(self._exec, self.stream.raw), "cudaGraphLaunch")

    def close(self) -> None:
        if self._exec is not None:
            exe, self._exec = self._exec, None
            check(runtime().cudaGraphExecDestroy(exe), "cudaGraphExecDestroy")
        if self._graph is not None:
            graph, self._graph = self._graph, None
            check(runtime().cudaGraphDestroy(graph), "cudaGraphDestroy")
