"""Where frames come from: a video file, an image (or a folder of them), a V4L2 camera, a network
stream (RTSP, UDP, TCP, HTTP...) or a GStreamer pipeline, all through OpenCV's ``VideoCapture``.

``open_source(text)`` decides which from the text alone and opens it, or raises
:class:`StreamError` naming the fix: a missing file, a file no decoder reads, an empty folder, a
camera that does not exist or is busy, a URL that does not answer within the time-out (never a
hang), a GStreamer pipeline on an OpenCV built without GStreamer (PyPI's wheels; JetPack's has it).

:class:`Capture` runs a source ahead of inference in its own thread with a bounded queue: a live
source keeps the newest frames (older ones are dropped and counted), a file gives every frame,
``realtime`` paces a file at its frame rate and treats it as live.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnn_deploy.errors import StreamError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pbm", ".tif", ".tiff", ".webp")
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "rtp", "srt", "http", "https", "hls")
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_CAMERA = re.compile(r"^/dev/video\d+$")
DEFAULT_TIMEOUT_S = 10.0


@functools.cache
def import_cv2() -> Any:
    """OpenCV, quiet (its warnings would bury our one-line errors), or how to install it."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    # FFmpeg's own decoder messages (a damaged packet on a lossy network) would flood stderr:
    # fatal only, unless the user asks for more (OPENCV_FFMPEG_LOGLEVEL=16 shows errors)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")
    try:
        import cv2
    except ImportError as exc:
        raise StreamError(
            f"`cnndeploy stream` needs OpenCV ({exc}): `pip install -e '.[stream]'` "
            "(opencv-python-headless); on a Jetson use JetPack's OpenCV (apt install "
            "python3-opencv, a venv with --system-site-packages), which has GStreamer") from None
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if os.environ["OPENCV_LOG_LEVEL"] == "ERROR" and logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)  # also where cv2 was imported before us
    return cv2


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, as the table and the record show it."""

    text: str  # what the user gave
    kind: str  # file, image, folder, camera, network, gstreamer
    live: bool  # frames arrive in real time: the newest wins, late ones are dropped
    fps: float | None  # the source's own rate, where it says
    frames: int | None  # frame count, where known (files, folders)


class Source:
    """An opened source: ``read()`` gives the next frame (H, W) or (H, W, 3) uint8, or None at
    its end. Not thread-safe: one reader (the capture thread)."""

    def __init__(self, info: SourceInfo) -> None:
        self.info = info
        self.unreadable = 0  # frames (images) that failed to decode and were skipped

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        return None


class _CaptureSource(Source):
    """Anything ``cv2.VideoCapture`` opens."""

    def __init__(self, info: SourceInfo, capture: Any) -> None:
        super().__init__(info)
        self._capture = capture
        self._lock = threading.Lock()  # never release() under a read() in another thread
        self._closed = False
        self._close_pending = False

    def read(self) -> np.ndarray | None:
        with self._lock:
            if self._closed:
                return None
            ok, frame = self._capture.read()
            if self._close_pending:  # close() gave up waiting for this read: release now
                self._closed = True
                self._capture.release()
                return None
        return frame if ok and frame is not None and frame.size else None

    def close(self) -> None:
        if self._lock.acquire(timeout=2.0):
            try:
                if not self._closed:
                    self._closed = True
                    self._capture.release()
            finally:
                self._lock.release()
        else:  # a read is blocked (a stalled camera): it releases the capture when it returns
            self._close_pending = True


class _ImagesSource(Source):
    """One image file, or every image of a folder in name order."""

    def __init__(self, info: SourceInfo, paths: list[Path]) -> None:
        super().__init__(info)
        self._paths = deque(paths)

    def read(self) -> np.ndarray | None:
        cv2 = import_cv2()
        while self._paths:
            path = self._paths.popleft()
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.size == 0:
                self.unreadable += 1
                continue
            return to_uint8(image)
        return None


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Frames as the tiler takes them: uint8 gray (H, W) or BGR (H, W, 3); 16-bit is scaled,
    alpha dropped."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    return image


def classify_text(text: str) -> str:
    """Which kind of source ``text`` names, without opening it."""
    match = _URL.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            return "file"
        if scheme not in URL_SCHEMES:
            raise StreamError(f"{text}: unknown stream scheme '{scheme}://'; OpenCV reads "
                              f"{', '.join(s + '://' for s in URL_SCHEMES)}")
        return "network"
    if " ! " in text and not Path(text).exists():
        return "gstreamer"
    if _CAMERA.match(text) or text.isdigit():
        return "camera"
    path = Path(text)
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    return "file"


def open_source(text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, fps: float | None = None) -> Source:
    """Open ``text`` as a frame source, or say why not and what to do. ``fps`` is requested from
    a camera; ``timeout_s`` bounds the open and every read of a network stream or a GStreamer
    pipeline."""
    if not text.strip():
        raise StreamError("no source given: a video file, a folder of images, /dev/videoN or a URL")
    kind = classify_text(text)
    if kind == "folder":
        return _open_folder(text)
    if kind == "image":
        path = Path(text)
        if not path.is_file():
            raise StreamError(f"no image at {text}: check the path")
        info = SourceInfo(text, "image", False, None, 1)
        source = _ImagesSource(info, [path])
        return source
    cv2 = import_cv2()
    if kind == "camera":
        return _open_camera(cv2, text, fps)
    if kind == "gstreamer":
        return _open_gstreamer(cv2, text, timeout_s)
    if kind == "network":
        return _open_network(cv2, text, timeout_s)
    return _open_file(cv2, text)


def _open_folder(text: str) -> Source:
    folder = Path(text)
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise StreamError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): "
                          "point at a folder of frames or a video file")
    return _ImagesSource(SourceInfo(text, "folder", False, None, len(paths)), paths)


def _open_file(cv2: Any, text: str) -> Source:
    path = Path(text[len("file://"):] if text.startswith("file://") else text)
    if not path.exists():
        raise StreamError(f"no such file, folder or camera: {text}")
    if not path.is_file():
        raise StreamError(f"{text} is not a regular file: give a video file, a folder of images, "
                          "/dev/videoN or a URL")
    if path.stat().st_size == 0:
        raise StreamError(f"{text} is empty (0 bytes): not a video")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise StreamError(f"{text} is not a video this OpenCV can decode: check the file, or "
                          "convert it (`ffmpeg -i in -c:v ffv1 out.mkv`)")
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    info = SourceInfo(text, "file", False, fps if fps and fps > 0 else None,
                      count if count > 0 else None)
    return _CaptureSource(info, capture)


def _open_camera(cv2: Any, text: str, fps: float | None) -> Source:
    device = f"/dev/video{text}" if text.isdigit() else text
    if not os.path.exists(device):
        present = sorted(str(p) for p in Path("/dev").glob("video*"))
        seen = ", ".join(present) if present else "none (is the camera plugged in and its driver loaded?)"
        raise StreamError(f"no camera at {device}: cameras here: {seen}")
    if not os.access(device, os.R_OK | os.W_OK):
        raise StreamError(f"no permission to open {device}: add yourself to the 'video' group "
                          "(`sudo usermod -aG video $USER`, then log in again)")
    capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
    if not capture.isOpened():
        capture.release()
        raise StreamError(f"cannot open camera {device}: busy (another program holds it? "
                          "`fuser " + device + "`) or not a capture device (`v4l2-ctl --list-devices`)")
    if fps is not None:
        capture.set(cv2.CAP_PROP_FPS, fps)
    got = float(capture.get(cv2.CAP_PROP_FPS)) or None
    return _CaptureSource(SourceInfo(device, "camera", True, got, None), capture)


def _open_gstreamer(cv2: Any, text: str, timeout_s: float) -> Source:
    if not has_gstreamer(cv2):
        raise StreamError("this OpenCV was built without GStreamer (PyPI's opencv wheels are), so "
                          "a GStreamer pipeline cannot be opened: use JetPack's OpenCV (apt install "
                          "python3-opencv; a venv with --system-site-packages, without the "
                          "[stream] extra), or give a file, /dev/videoN or a URL")
    # our own appsink keeps only the newest buffer and does not hold frames back to the clock
    pipeline = text if "appsink" in text else text + " ! appsink drop=true max-buffers=1 sync=false"
    capture = _bounded_capture(cv2, pipeline, cv2.CAP_GSTREAMER, timeout_s)
    if not capture.isOpened():
        capture.release()
        raise StreamError(f"GStreamer could not start '{text}': try it with `gst-launch-1.0 "
                          f"{text.split(' ! appsink')[0]} ! fakesink` to see why")
    return _CaptureSource(SourceInfo(text, "gstreamer", True, None, None), capture)


def has_gstreamer(cv2: Any) -> bool:
    return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))


def _bounded_capture(cv2: Any, text: str, api: int, timeout_s: float) -> Any:
    """A VideoCapture whose open and every read give up after ``timeout_s`` (FFmpeg and
    GStreamer backends; OpenCV >= 4.6)."""
    ms = int(min(timeout_s, 3600.0) * 1000)  # OpenCV takes an int32 of milliseconds
    return cv2.VideoCapture(text, api, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])


def _open_network(cv2: Any, text: str, timeout_s: float) -> Source:
    capture = _bounded_capture(cv2, text, cv2.CAP_FFMPEG, timeout_s)
    if not capture.isOpened():
        capture.release()
        raise StreamError(f"no stream at {text} within {timeout_s:g} s: check the URL, that the "
                          "sender is running and reachable (firewall?), or raise --timeout")
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or None
    return _CaptureSource(SourceInfo(text, "network", True, fps if fps and fps < 1000 else None,
                                     None), capture)


# -- capture ahead of inference ----------------------------------------------------
@dataclass
class Captured:
    """One frame off the source: its index in the source, when ``read()`` started and returned,
    and what ``prepare`` made of it (the tiles) and how long that took."""

    index: int
    image: np.ndarray
    read_ns: int  # read() called
    arrived_ns: int  # read() returned: the frame is here, decoded
    prepared: Any = None
    prepare_ms: float = 0.0

    @property
    def decode_ms(self) -> float:
        return (self.arrived_ns - self.read_ns) / 1e6


class Capture:
    """Reads ``source`` ahead of the consumer, in its own thread, into a queue of ``depth``.

    Live (a camera, a network stream, or a file with ``realtime``): when the queue is full the
    oldest frame is dropped, and ``get`` hands out the newest, dropping older ones (all counted
    in ``dropped``). Otherwise the thread waits for room: every frame is processed.
    ``realtime`` paces a file at ``fps``. ``prepare(image)`` (the tiling) runs where the read
    runs. ``threaded=False`` reads and prepares in ``get`` instead: where inference already
    keeps every core busy (a CPU backend), a capture thread only competes with it.
    ``prime()`` reads the first frame before anything starts, for an untimed warm-up.
    A source error ends the stream; ``error`` keeps it for the consumer to report."""

    def __init__(self, source: Source, *, depth: int = 4, realtime: bool = False,
                 fps: float | None = None, max_frames: int | None = None,
                 prepare: Callable[[np.ndarray], Any] | None = None, threaded: bool = True,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.source = source
        self.realtime = realtime and not source.info.live
        self.live = source.info.live or self.realtime
        self.pace_fps = (fps or source.info.fps or 30.0) if self.realtime else None
        self.max_frames = max_frames
        self.threaded = threaded or self.live  # a live source must be drained as it comes
        self.dropped = 0
        self.read_frames = 0
        self.error: BaseException | None = None
        self._prepare = prepare
        self._clock = clock
        self._queue: deque[Captured] = deque()
        self._depth = max(1, depth)
        self._cond = threading.Condition()
        self._done = False
        self._started_ns = 0
        self._begun = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def prime(self) -> Captured | None:
        """Read and prepare the first frame now (it stays first in the queue); None: no frame."""
        self._started_ns = self._clock()
        item = self._next()
        if item is not None:
            self._queue.append(item)
        else:
            self._done = True
        return item

    def start(self) -> None:
        """Start reading ahead (threaded); ``realtime`` paces from now, as if the frames read
        so far (``prime``) had come on time."""
        if self._begun:
            return
        self._begun = True
        self._started_ns = self._clock()
        if self.pace_fps:
            self._started_ns -= int(self.read_frames * 1e9 / self.pace_fps)
        if self.threaded and not self._done and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cnndeploy-capture",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading and release the source (a read still blocked past ``timeout_s`` keeps
        its source: the source's own lock refuses to release under a read)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self.source.close()

    def _next(self) -> Captured | None:
        """Pace, read and prepare the next frame; None at the end or the frame limit."""
        index = self.read_frames
        if self.max_frames is not None and not self.live and index >= self.max_frames:
            return None
        if self.pace_fps:
            due = self._started_ns + int(index * 1e9 / self.pace_fps)
            wait = (due - self._clock()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                return None
        t0 = self._clock()
        image = self.source.read()
        t1 = self._clock()
        if image is None:
            return None
        item = Captured(index, image, t0, t1)
        if self._prepare is not None:
            item.prepared = self._prepare(image)
            item.prepare_ms = (self._clock() - t1) / 1e6
        self.read_frames = index + 1
        return item

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._next()
                if item is None:
                    break
                self._put(item)
        except BaseException as exc:  # handed to the consumer, which reports it
            self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _put(self, item: Captured) -> None:
        with self._cond:
            if self.live:
                while len(self._queue) >= self._depth:
                    self._queue.popleft()
                    self.dropped += 1
            else:
                while len(self._queue) >= self._depth and not self._stop.is_set():
                    self._cond.wait(0.1)
            self._queue.append(item)
            self._cond.notify_all()

    def waiting(self) -> bool:
        """A frame is already read and waiting (the consumer will not wait for the next)."""
        return bool(self._queue)

    def get(self) -> Captured | None:
        """The next frame (the newest, live), waiting for it; None once the source is done."""
        if not self._begun:
            self.start()
        if not self.threaded:
            if self._queue:
                return self._queue.popleft()
            if self._done or self._stop.is_set():
                return None
            try:
                item = self._next()
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.error, item = exc, None
            if item is None:
                self._done = True
            return item
        with self._cond:
            while not self._queue and not self._done:
                self._cond.wait(0.1)
            if not self._queue:
                return None
            if self.live:  # the newest wins: older frames still queued are dropped
                while len(self._queue) > 1:
                    self._queue.popleft()
                    self.dropped += 1
            item = self._queue.popleft()
            self._cond.notify_all()
            return item
