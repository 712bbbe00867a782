"""Frames -> the model's tiles, in one vectorised step.

A frame is cropped to the region of interest, optionally rescaled, converted to the model's
channels (gray for a 1-channel model, RGB for a 3-channel one; OpenCV decodes to BGR), and cut
into tiles of the model's input H x W at a stride (a stride below the tile size is a sliding
window). The tiles are a strided view of the frame (``numpy.lib.stride_tricks``) turned into the
model's NCHW float32 batch by one copy that also applies the pixel scale: no loop per tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnn_deploy.errors import StreamError
from cnn_deploy.stream.sources import import_cv2

# Per frame: the tiles as float32, and the resized region. A 640x480 frame at stride 1 would
# be 277,689 tiles (870 MiB); the capture queue holds several frames.
MAX_TILES_BYTES = 256 * 2**20
MAX_SCALED_PIXELS = 64 * 10**6


@dataclass(frozen=True)
class Roi:
    """A region of interest in source-frame pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    @classmethod
    def parse(cls, text: str) -> Roi:
        parts = [p.strip() for p in text.split(",")]
        try:
            x, y, w, h = (int(p) for p in parts)
        except ValueError:
            raise StreamError(f"--roi {text}: expected X,Y,WIDTH,HEIGHT in pixels, "
                              "e.g. --roi 0,0,320,240") from None
        if x < 0 or y < 0 or w < 1 or h < 1:
            raise StreamError(f"--roi {text}: X and Y must be >= 0, WIDTH and HEIGHT >= 1")
        return cls(x, y, w, h)

    def __str__(self) -> str:
        return f"{self.x},{self.y},{self.w},{self.h}"


def parse_pair(text: str, what: str) -> tuple[int, int]:
    """``28`` or ``28x14`` (height x width) -> (h, w), both >= 1."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise StreamError(f"{what} {text}: expected N or HxW pixels, e.g. 28 or 28x28") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise StreamError(f"{what} {text}: expected N or HxW pixels, each at least 1")
    return (values[0], values[-1])


@dataclass(frozen=True)
class TilingConfig:
    """How frames become tiles; None fields take the model's tile size / a stride of one tile."""

    tile: tuple[int, int] | None = None  # (h, w); must equal the model's input H, W
    stride: tuple[int, int] | None = None  # (y, x)
    roi: Roi | None = None
    scale: float = 1.0  # resize factor applied to the ROI before tiling
    pixel_scale: float | None = None  # multiplies 0..255 pixels; None: from the model's metadata


class Tiler:
    """The tiling of one frame size for one model: where every tile lies, and ``cut(frame)``."""

    def __init__(self, config: TilingConfig, channels: int, model_hw: tuple[int, int],
                 frame_hw: tuple[int, int]) -> None:
        if channels not in (1, 3):
            raise StreamError(f"the model takes {channels}-channel tiles: stream feeds gray "
                              "(1 channel) or RGB (3 channels) only")
        if config.scale <= 0 or not np.isfinite(config.scale):
            raise StreamError(f"--scale {config.scale}: must be a positive factor, e.g. 0.5")
        tile = config.tile or model_hw
        if tile != model_hw:
            raise StreamError(f"--tile {tile[0]}x{tile[1]} differs from the model's input "
                              f"{model_hw[0]}x{model_hw[1]}: tiles must match it (use --scale to "
                              "resize the frame instead)")
        self.config, self.channels, self.tile = config, channels, tile
        self.stride = config.stride or tile
        fh, fw = frame_hw
        roi = config.roi or Roi(0, 0, fw, fh)
        if roi.x >= fw or roi.y >= fh or roi.x + roi.w > fw or roi.y + roi.h > fh:
            raise StreamError(f"--roi {roi} lies outside the {fw}x{fh} frame: keep X+WIDTH <= "
                              f"{fw} and Y+HEIGHT <= {fh}")
        self.roi, self.frame_hw = roi, frame_hw
        self.scaled_hw = (max(1, round(roi.h * config.scale)), max(1, round(roi.w * config.scale)))
        if self.scaled_hw[0] * self.scaled_hw[1] > MAX_SCALED_PIXELS:
            raise StreamError(f"--scale {config.scale:g} makes the {roi.w}x{roi.h} region "
                              f"{self.scaled_hw[1]}x{self.scaled_hw[0]} pixels (over "
                              f"{MAX_SCALED_PIXELS // 10**6} megapixels): lower --scale")
        sh, sw = self.scaled_hw
        th, tw = tile
        if th > sh or tw > sw:
            where = "ROI" if config.roi else "frame"
            raise StreamError(f"the {th}x{tw} tile is larger than the {where} ({sw}x{sh} after "
                              f"--scale {config.scale:g}): use a larger --roi or --scale")
        self.rows = (sh - th) // self.stride[0] + 1
        self.cols = (sw - tw) // self.stride[1] + 1
        self._origins: np.ndarray | None = None
        tiles_bytes = self.count * channels * th * tw * 4
        if tiles_bytes > MAX_TILES_BYTES:
            raise StreamError(f"a {fw}x{fh} frame cut at stride {self.stride[0]}x{self.stride[1]} "
                              f"makes {self.count:,} tiles ({tiles_bytes / 2**20:,.0f} MiB of float32 "
                              f"per frame, over {MAX_TILES_BYTES // 2**20} MiB): raise --stride, "
                              "narrow --roi or lower --scale")

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def origins(self) -> np.ndarray:
        """(count, 2) int: each tile's top-left (x, y) in source-frame pixels, row-major (the
        same array for every frame: do not modify it)."""
        if self._origins is None:
            self._origins = self._grid()
            self._origins.flags.writeable = False
        return self._origins

    def _grid(self) -> np.ndarray:
        fy, fx = self._factors()
        ys = np.arange(self.rows) * self.stride[0] / fy + self.roi.y
        xs = np.arange(self.cols) * self.stride[1] / fx + self.roi.x
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        return np.rint(grid).astype(np.int64)

    @property
    def source_tile(self) -> tuple[int, int]:
        """A tile's (h, w) in source-frame pixels."""
        fy, fx = self._factors()
        return (round(self.tile[0] / fy), round(self.tile[1] / fx))

    def _factors(self) -> tuple[float, float]:
        """The resize actually applied per axis (after rounding the scaled size)."""
        return (self.scaled_hw[0] / self.roi.h, self.scaled_hw[1] / self.roi.w)

    def _pixels(self, image: np.ndarray) -> np.ndarray:
        """ROI, scale and channels: (h, w) for gray, (h, w, 3) RGB for colour, uint8."""
        r = self.roi
        region = image[r.y:r.y + r.h, r.x:r.x + r.w]
        if self.channels == 1 and region.ndim == 3:
            cv2 = import_cv2()
            region = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_BGR2GRAY)
        if self.config.scale != 1.0:
            cv2 = import_cv2()
            sh, sw = self.scaled_hw
            region = cv2.resize(np.ascontiguousarray(region), (sw, sh), interpolation=cv2.INTER_AREA)
        if self.channels == 3:
            region = region[:, :, ::-1] if region.ndim == 3 else np.repeat(region[:, :, None], 3, 2)
        return region

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The frame's tiles as one contiguous (count, C, th, tw) float32 batch."""
        if image.shape[:2] != self.frame_hw:
            raise StreamError(f"frame size changed from {self.frame_hw[1]}x{self.frame_hw[0]} to "
                              f"{image.shape[1]}x{image.shape[0]}")
        pixels = self._pixels(image)
        th, tw = self.tile
        sy, sx = self.stride
        windows = np.lib.stride_tricks.sliding_window_view(pixels, (th, tw), axis=(0, 1))
        windows = windows[::sy, ::sx][:self.rows, :self.cols]  # (rows, cols, [C,] th, tw)
        out = np.empty((self.count, self.channels, th, tw), dtype=np.float32)
        view = out.reshape(self.rows, self.cols, *windows.shape[2:])
        scale = 1.0 if self.config.pixel_scale is None else self.config.pixel_scale
        if scale == 1.0:
            np.copyto(view, windows)
        else:
            np.multiply(windows, np.float32(scale), out=view, dtype=np.float32)
        return out
