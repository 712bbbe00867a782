"""Test videos from real MNIST digits: frames with a digit in every grid cell, the ground truth
known, encoded with a real codec (FFV1 lossless or MPEG-4 Part 2 through OpenCV, H.264 through
the ``ffmpeg`` program, or PNG frames). ``cnndeploy data video`` and the stream tests use it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_deploy.errors import StreamError
from cnn_deploy.stream.sources import import_cv2

CODECS = ("ffv1", "h264", "mp4v", "png")
TILE = 28


@dataclass
class DigitVideo:
    """Frames (F, H, W) uint8, each with one digit per grid cell; ``labels`` (F, cells) and
    ``origins`` (cells, 2) top-left (x, y) of each digit."""

    frames: np.ndarray
    labels: np.ndarray
    origins: np.ndarray

    def truth(self) -> dict[str, object]:
        return {"tile": TILE, "origins": self.origins.tolist(), "labels": self.labels.tolist()}


def digit_frames(images: np.ndarray, labels: np.ndarray, frames: int, *,
                 size: tuple[int, int] = (640, 480), pitch: int = TILE,
                 offset: tuple[int, int] = (0, 0), first: int = 0) -> DigitVideo:
    """``frames`` frames of ``size`` (width, height) with digits ``first``, ``first + 1``, ...
    of ``images`` (cycling) at ``offset + k * pitch`` on both axes, on black."""
    width, height = size
    if frames < 1 or pitch < TILE or min(offset) < 0 or min(size) < 1:
        raise StreamError("a digit video needs frames >= 1, a pitch >= 28 and offsets >= 0")
    xs = np.arange(offset[0], width - TILE + 1, pitch)
    ys = np.arange(offset[1], height - TILE + 1, pitch)
    if xs.size == 0 or ys.size == 0:
        raise StreamError(f"a {width}x{height} frame holds no {TILE}x{TILE} digit at offset {offset}")
    origins = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    cells = len(origins)
    picks = (first + np.arange(frames * cells)) % len(images)
    out = np.zeros((frames, height, width), dtype=np.uint8)
    digits = images[picks].reshape(frames, cells, TILE, TILE)
    for k, (x, y) in enumerate(origins):
        out[:, y:y + TILE, x:x + TILE] = digits[:, k]
    return DigitVideo(out, labels[picks].reshape(frames, cells), origins)


def write_video(video: DigitVideo, path: Path, codec: str = "ffv1", fps: float = 30.0,
                crf: int = 23) -> Path:
    """Encode the frames to ``path`` (a folder of PNGs for ``png``) and its ground truth to
    ``<path>.truth.json``. ``h264`` needs the ``ffmpeg`` program (libx264, ``crf``)."""
    try:
        return _write_video(video, path, codec, fps, crf)
    except OSError as exc:
        raise StreamError(f"cannot write {path} ({exc.strerror or exc}): choose another path "
                          "or free some space") from None


def _write_video(video: DigitVideo, path: Path, codec: str, fps: float, crf: int) -> Path:
    if codec not in CODECS:
        raise StreamError(f"codec {codec}: choose one of {', '.join(CODECS)}")
    cv2 = import_cv2()
    frames = video.frames
    height, width = frames.shape[1:]
    final, path = path, path.with_name(f".{path.stem}.part{path.suffix}")  # renamed when complete
    if codec == "png":
        if path.is_dir():  # a .part folder left by an interrupted run
            shutil.rmtree(path)
        path.mkdir(parents=True)
        for i, frame in enumerate(frames):
            cv2.imwrite(str(path / f"frame_{i:06d}.png"), frame)
    elif codec == "h264":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise StreamError("H.264 needs the ffmpeg program (apt install ffmpeg); OpenCV's PyPI "
                              "wheels have no H.264 encoder: use --codec ffv1 or mp4v")
        command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo",
                   "-pix_fmt", "gray", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
                   "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                   str(path)]
        done = subprocess.run(command, input=frames.tobytes(), capture_output=True, check=False)
        if done.returncode != 0:
            raise StreamError(f"ffmpeg could not write {final}: {done.stderr.decode().strip()[-300:]}")
    else:
        fourcc = cv2.VideoWriter_fourcc(*{"ffv1": "FFV1", "mp4v": "mp4v"}[codec])
        writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height), isColor=False)
        if not writer.isOpened():
            raise StreamError(f"OpenCV cannot write {codec} to {final}: use .mkv or .avi for "
                              "ffv1, .mp4 or .avi for mp4v")
        for frame in frames:
            writer.write(frame)
        writer.release()
    if codec == "png" and final.is_dir():
        shutil.rmtree(final)
    os.replace(path, final)
    truth = final / "truth.json" if codec == "png" else final.with_name(final.name + ".truth.json")
    truth.write_text(json.dumps(video.truth()))
    return truth


def make_video(path: Path, *, codec: str | None = None, frames: int = 300, fps: float = 30.0,
               size: tuple[int, int] = (640, 480), pitch: int = TILE,
               offset: tuple[int, int] = (0, 0), data: str | None = None, force: bool = False) -> Path:
    """``cnndeploy data video``: a test video of MNIST test digits (codec from the suffix:
    .mkv/.avi FFV1, .mp4 H.264 with ffmpeg else MPEG-4, no suffix a PNG folder); the truth
    file's path is returned."""
    from cnn_deploy.data import load_mnist

    if codec is None:
        suffix = path.suffix.lower()
        codec = {".mkv": "ffv1", ".avi": "ffv1", ".mp4": "h264" if shutil.which("ffmpeg") else "mp4v",
                 "": "png"}.get(suffix)
        if codec is None:
            raise StreamError(f"{path}: give a .mkv, .avi or .mp4 path, or a folder name for PNGs")
    _check_target(path, codec, force)
    width, height = size
    if not (TILE <= width <= 8192 and TILE <= height <= 8192):
        raise StreamError(f"--size {width}x{height}: width and height within {TILE}..8192")
    if codec == "h264" and (width % 2 or height % 2):
        raise StreamError(f"--size {width}x{height}: H.264 (yuv420p) needs an even width and "
                          "height")
    if frames < 1 or frames > 100_000:
        raise StreamError(f"--frames {frames}: choose 1..100000")
    if frames * width * height > 2**31:
        raise StreamError(f"{frames} frames of {width}x{height} are over 2 GiB of pixels: "
                          "fewer --frames or a smaller --size")
    if not 1 <= fps <= 1000:
        raise StreamError(f"--fps {fps:g}: choose a rate in 1..1000")
    mnist = load_mnist(data)
    video = digit_frames(mnist.test_images, mnist.test_labels, frames, size=size, pitch=pitch,
                         offset=offset)
    return write_video(video, path, codec, fps)


def _check_target(path: Path, codec: str, force: bool) -> None:
    """Refuse a path that would lose data or cannot be written: an existing file (without
    ``force``), a folder that is not an earlier digit video, a device, a read-only folder."""
    if not path.name or path.resolve() == Path.cwd().resolve():
        raise StreamError(f"'{path}': give a file name (.mkv, .avi, .mp4) or a new folder name")
    if path.exists():
        if not (path.is_file() or path.is_dir()):
            raise StreamError(f"{path} is not a regular file or folder: choose another path")
        if not force:
            raise StreamError(f"{path} exists: choose another path or add --force to replace it")
        if path.is_dir() and (codec != "png" or any(
                not (p.name == "truth.json" or (p.name.startswith("frame_") and p.suffix == ".png"))
                for p in path.iterdir())):
            raise StreamError(f"{path} is a folder with other files in it: --force replaces only "
                              "an earlier digit video; choose a new folder")
    parent = path.parent
    if not parent.is_dir():
        raise StreamError(f"folder {parent} does not exist: create it first")
    if not os.access(parent, os.W_OK):
        raise StreamError(f"folder {parent} is not writable: choose another path")


def accuracy(labels: np.ndarray, origins: np.ndarray, truth: dict[str, object],
             frame: int) -> tuple[int, int]:
    """(correct, compared): tiles whose origin is a digit's origin in ``truth``, on one frame."""
    truth_origins = np.asarray(truth["origins"])
    truth_labels = np.asarray(truth["labels"])[frame]
    index = {(int(x), int(y)): k for k, (x, y) in enumerate(truth_origins)}
    correct = compared = 0
    for (x, y), label in zip(origins, labels, strict=True):
        k = index.get((int(x), int(y)))
        if k is not None:
            compared += 1
            correct += int(label == truth_labels[k])
    return correct, compared
