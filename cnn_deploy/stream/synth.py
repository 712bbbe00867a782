"""Test videos from real MNIST digits: frames with a digit in every grid cell, the ground truth
known, encoded with a real codec (FFV1 lossless or MPEG-4 Part 2 through OpenCV, H.264 through
the ``ffmpeg`` program, or PNG frames). ``cnndeploy data video`` and the stream tests use it.
"""

from __future__ import annotations

import json
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
    if frames < 1 or pitch < TILE or min(offset) < 0:
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
    if codec not in CODECS:
        raise StreamError(f"codec {codec}: choose one of {', '.join(CODECS)}")
    cv2 = import_cv2()
    frames = video.frames
    height, width = frames.shape[1:]
    if codec == "png":
        path.mkdir(parents=True, exist_ok=True)
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
            raise StreamError(f"ffmpeg could not write {path}: {done.stderr.decode()[-300:]}")
    else:
        fourcc = cv2.VideoWriter_fourcc(*{"ffv1": "FFV1", "mp4v": "mp4v"}[codec])
        writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height), isColor=False)
        if not writer.isOpened():
            raise StreamError(f"OpenCV cannot write {codec} to {path}: use .mkv or .avi for ffv1, "
                              ".mp4 or .avi for mp4v")
        for frame in frames:
            writer.write(frame)
        writer.release()
    truth = path / "truth.json" if codec == "png" else path.with_name(path.name + ".truth.json")
    truth.write_text(json.dumps(video.truth()))
    return truth


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
