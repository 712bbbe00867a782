"""Published peak figures of common NVIDIA GPUs and Jetson modules, for comparing measured
device-vs-device speed-ups with what the hardware promises (thesis: "the speed-up follows the
devices' specifications"). A leaf: pure data and one lookup.

Figures are the vendors' spec-sheet peaks at boost clock: FP32 on the CUDA cores, FP16 dense
(tensor cores where the part has them, else the CUDA cores' half-precision rate; None where
FP16 has no fast path, e.g. Maxwell's GM206), and memory bandwidth. They are ceilings, not
expectations; a record carries the figure it was compared with.
"""

from __future__ import annotations

import re
from typing import Any

# name pattern (matched against the lower-case GPU name) -> (FP32 TFLOP/s, FP16 TFLOP/s, GB/s)
PEAKS: tuple[tuple[str, float, float | None, float], ...] = (
    # the thesis's devices (2016)
    (r"gtx 960\b", 2.41, None, 112.0),
    (r"tegra x1|jetson tx1|\btx1\b", 0.512, 1.024, 25.6),
    # Jetson
    # (a Jetson's GPU is named "Orin (nvgpu)" on every Orin module: the board decides)
    (r"jetson nano", 0.236, 0.472, 25.6),
    (r"xavier nx", 0.845, 1.69, 59.7),
    (r"agx xavier", 1.41, 11.0, 136.5),
    (r"orin nano", 1.28, 20.0, 68.0),
    (r"orin nx", 1.88, 50.0, 102.4),
    (r"agx orin", 5.32, 85.0, 204.8),
    # data centre
    (r"\bt4\b", 8.1, 65.0, 320.0),
    (r"v100", 15.7, 125.0, 900.0),
    (r"a100", 19.5, 312.0, 2039.0),
    (r"\ba10\b", 31.2, 125.0, 600.0),
    (r"\bl4\b", 30.3, 121.0, 300.0),
    (r"\bl40s\b", 91.6, 362.0, 864.0),
    (r"h100.*pcie", 51.2, 756.0, 2000.0),
    (r"h100", 66.9, 989.0, 3350.0),
    (r"h200", 66.9, 989.0, 4800.0),
    # desktop
    (r"rtx 3090", 35.6, 71.0, 936.0),
    (r"rtx 4090", 82.6, 165.2, 1008.0),
)


def gpu_peak(name: str, board: str = "") -> dict[str, Any] | None:
    """The published peaks of a GPU by its name ('NVIDIA H200') or, on a Jetson, its board
    ('NVIDIA Jetson AGX Orin Developer Kit' from /proc/device-tree/model); None if unknown."""
    lowered = f"{name} {board}".lower()
    for pattern, fp32, fp16, bandwidth in PEAKS:
        if re.search(pattern, lowered):
            return {"fp32_tflops": fp32, "fp16_tflops": fp16, "bandwidth_gbs": bandwidth,
                    "source": "vendor spec sheet, boost clock, dense"}
    return None
