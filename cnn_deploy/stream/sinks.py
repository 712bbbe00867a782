"""Where a frame's labels go: JSONL lines (one per frame) and annotated frames (a video file or
a folder of PNG images: the tile grid, each tile's label, low-confidence tiles greyed).

Output paths are checked before any frame is read; a video is opened at the first frame (its
size is known then) and closed, complete, at the end or on Ctrl-C.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cnn_deploy.errors import StreamError
from cnn_deploy.stream.classifier import FrameResult
from cnn_deploy.stream.sources import import_cv2

# container -> fourcc OpenCV's FFmpeg writes (PyPI's OpenCV has no H.264 encoder)
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1", ".mov": "mp4v"}


class Sink:
    def write(self, image: np.ndarray, result: FrameResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None


class JsonlSink(Sink):
    """One JSON line per frame: ``{"frame", "rows", "cols", "tile", "tiles": [[x, y, label,
    confidence], ...]}`` (tiles row-major, x/y the top-left in source pixels)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, image: np.ndarray, result: FrameResult) -> None:
        try:
            self.out.write(json.dumps(result.to_dict(), separators=(",", ":")) + "\n")
            self.out.flush()
        except BrokenPipeError:
            raise StreamError("the JSON lines' reader went away (a closed pipe, e.g. `| head`): "
                              "the frames so far are in the record") from None
        except OSError as exc:
            raise StreamError(f"cannot write the JSON lines ({exc.strerror or exc})") from None


def check_out(path: Path, source: str | None = None, force: bool = False) -> str:
    """Refuse an --out that cannot be written or would lose data, before any work: the source
    itself or a path inside it, an existing video or a folder holding files (without
    ``force``). Returns 'video' or 'folder'."""
    if not str(path).strip() or path.resolve() == Path.cwd().resolve():
        raise StreamError("--out needs a video path (.mp4, .avi, .mkv) or a new folder name, "
                          "not the current folder")
    if source is not None and Path(source).exists():
        src, out = Path(source).resolve(), path.resolve()
        if out == src or src in out.parents:
            raise StreamError(f"--out {path} would overwrite the source {source}: choose "
                              "another path")
    suffix = path.suffix.lower()
    if suffix in VIDEO_CODECS:
        if path.is_dir():
            raise StreamError(f"--out {path} is a folder: give a video path ({', '.join(VIDEO_CODECS)}) "
                              "or a folder name without a video suffix")
        if path.exists() and not force:
            raise StreamError(f"--out {path} exists: choose another path or add --force to "
                              "replace it")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise StreamError(f"--out {path}: folder {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise StreamError(f"--out {path} is not writable: choose another path")
        return "video"
    if suffix and not path.is_dir():
        raise StreamError(f"--out {path}: expected a video ({', '.join(VIDEO_CODECS)}) or a folder "
                          "for annotated PNG frames")
    if path.exists() and not path.is_dir():
        raise StreamError(f"--out {path} is a file, not a folder: give a folder or a video path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise StreamError(f"--out {path} is a folder that holds files: choose a new folder or "
                          "add --force to write frame_*.png into it")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StreamError(f"--out {path}: cannot create the folder ({exc.strerror}); choose "
                          "another path") from None
    if not os.access(path, os.W_OK):
        raise StreamError(f"--out {path} is not writable: choose another folder")
    return "folder"


class AnnotatedSink(Sink):
    """Frames with the tile grid drawn: each tile's label, tiles below ``min_confidence`` greyed."""

    def __init__(self, path: Path, fps: float | None, min_confidence: float = 0.5) -> None:
        self.path, self.fps, self.min_confidence = path, fps or 30.0, min_confidence
        self.kind = "video" if path.suffix.lower() in VIDEO_CODECS else "folder"  # job.check_out
        if self.kind == "folder":
            path.mkdir(parents=True, exist_ok=True)
        self._writer: Any = None
        self._tmp: Path | None = None

    def write(self, image: np.ndarray, result: FrameResult) -> None:
        cv2 = import_cv2()
        try:
            self._write(cv2, annotate(image, result, self.min_confidence), result)
        except cv2.error as exc:
            raise StreamError(f"OpenCV could not write {self.path}: {str(exc).strip()[-200:]}") from None

    def _write(self, cv2: Any, frame: np.ndarray, result: FrameResult) -> None:
        if self.kind == "folder":
            target = self.path / f"frame_{result.index:06d}.png"
            if not cv2.imwrite(str(target), frame):
                raise StreamError(f"could not write {target}: is the disk full?")
        else:
            if self._writer is None:
                self._tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix}")
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
                h, w = frame.shape[:2]
                self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (w, h))
                if not self._writer.isOpened():
                    raise StreamError(f"OpenCV cannot write {self.path.suffix} video to {self.path}: "
                                      "try .avi or .mkv, or a folder")
            self._writer.write(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self._tmp is not None and self._tmp.exists():
                os.replace(self._tmp, self.path)


def annotate(image: np.ndarray, result: FrameResult, min_confidence: float = 0.5) -> np.ndarray:
    """A BGR copy of the frame with each tile outlined and labelled; low-confidence tiles greyed."""
    cv2 = import_cv2()
    frame = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    th, tw = result.tile_hw
    low = result.confidence < min_confidence
    for (x, y), label, dim in zip(result.origins, result.labels, low, strict=True):
        x2, y2 = int(x) + tw - 1, int(y) + th - 1
        if dim:
            patch = frame[y:y2 + 1, x:x2 + 1]
            patch[:] = (patch.astype(np.uint16) // 3 + 85).astype(np.uint8)
            colour = (128, 128, 128)
        else:
            colour = (0, 200, 0)
        cv2.rectangle(frame, (int(x), int(y)), (x2, y2), colour, 1)
        cv2.putText(frame, str(int(label)), (int(x) + 2, int(y) + 11), cv2.FONT_HERSHEY_PLAIN,
                    0.8, colour, 1, cv2.LINE_AA)
    return frame
