"""95 % bootstrap intervals (bench/intervals.py): within a process, across processes, in the
summaries and tables, in the records, and in the report's conclusions ("cannot tell")."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_deploy.bench import intervals
from cnn_deploy.bench.plan import Measurement
from cnn_deploy.bench.summary import summarise_cells
from cnn_deploy.bench.timing import summarise


def test_a_steady_run_has_a_narrow_interval_around_its_figure() -> None:
    rng = np.random.default_rng(1)
    samples = list(rng.normal(10.0, 0.1, 400))  # 10 ms per batch of 100: 10 tiles/ms
    ci = intervals.sample_ci(samples, batch=100)
    tiles = summarise(samples, 100).tiles_per_ms
    assert ci["tiles_per_ms"][0] < tiles < ci["tiles_per_ms"][1]
    assert intervals.relative_halfwidth(ci["tiles_per_ms"], tiles) < 0.005
    assert ci["median_ms"][0] <= float(np.median(samples)) <= ci["median_ms"][1]
    assert ci["p99_ms"][1] >= ci["p90_ms"][0]


def test_the_interval_shrinks_with_more_iterations_and_is_repeatable() -> None:
    rng = np.random.default_rng(2)
    few, many = list(rng.exponential(1.0, 20) + 5), list(rng.exponential(1.0, 2000) + 5)

    def width(s: list[float]) -> float:
        lo, hi = intervals.sample_ci(s, 1)["tiles_per_ms"]
        return hi - lo

    assert width(many) < width(few) / 4
    assert intervals.sample_ci(few, 1) == intervals.sample_ci(few, 1)  # seeded
    assert intervals.sample_ci([1.0, 2.0], 1) == {}  # too few to say anything


def test_overlapped_timing_scales_to_the_wall_time() -> None:
    samples = [2.0] * 50 + [2.2] * 50  # each iteration's span; two in flight
    wall = sum(samples) / 2
    ci = intervals.sample_ci(samples, 10, wall_ms=wall)
    tiles = summarise(samples, 10, wall).tiles_per_ms
    assert ci["tiles_per_ms"][0] < tiles < ci["tiles_per_ms"][1]


def cell(process: int, level: float, n: int = 200, seed: int = 0) -> Measurement:
    rng = np.random.default_rng(seed + process)
    samples = list(rng.normal(level, level * 0.01, n))
    return Measurement(0, "onnxruntime extended 2t", "onnxruntime", {}, "cpu", 100, 100, samples,
                       2, summarise(samples, 100), [], [], "random", 100.0, process)


def test_processes_at_two_levels_give_a_wide_interval_and_a_warning() -> None:
    steady = summarise_cells([cell(p, 10.0) for p in range(3)])[0]
    bimodal = summarise_cells([cell(0, 10.0), cell(1, 13.0), cell(2, 10.2)])[0]
    assert steady.ci is not None and bimodal.ci is not None
    assert steady.halfwidth is not None and steady.halfwidth < 0.01
    assert bimodal.halfwidth is not None and bimodal.halfwidth > intervals.WIDE
    assert not any("known to" in w for w in steady.warnings)
    assert any("known to +-" in w and "--processes" in w for w in bimodal.warnings)


def test_overlap() -> None:
    assert intervals.overlap([1, 3], [2, 4]) and not intervals.overlap([1, 2], [3, 4])
    assert not intervals.overlap(None, [1, 2])


def test_the_bench_record_carries_the_processes_intervals() -> None:
    from cnn_deploy.bench.timing import TimingConfig
    from cnn_deploy.results.records import measurement_payload
    from cnn_deploy.results.tidy import tidy

    payload = measurement_payload(cell(0, 10.0), model={"name": "m", "spec": {"name": "lenet_1c1f"}},
                                  timing=TimingConfig(), precision="fp32", processes=1)
    lo, hi = payload["ci95"]["tiles_per_ms"]
    assert lo < payload["stats"]["tiles_per_ms"] < hi
    (row,) = tidy([{"kind": "bench", **payload}])
    assert (row["ci_lo"], row["ci_hi"]) == (lo, hi)


def rows(net: str, batch: int, tiles: float, half: float | None) -> dict[str, object]:
    conv, fc = (int(net[6]), int(net[8]))
    return {"kind": "bench", "net": net, "conv_layers": conv, "fc_layers": fc, "depth": 20,
            "neurons": 512, "backend": "onnxruntime", "device": "cpu", "batch": batch,
            "tiles_per_ms": tiles, "ci_lo": None if half is None else tiles * (1 - half),
            "ci_hi": None if half is None else tiles * (1 + half)}


@pytest.mark.parametrize(("half", "verdict"), [(None, "holds"), (0.01, "holds"),
                                                (0.2, "cannot tell at this noise level")])
def test_a_conclusion_inside_the_noise_is_cannot_tell(half: float | None, verdict: str) -> None:
    from cnn_deploy.study.report import batch_saturates, fc_cheaper_than_conv

    data = [rows("lenet_1c5f", 1024, 11.0, half), rows("lenet_5c1f", 1024, 10.0, half)]
    assert fc_cheaper_than_conv(data).verdict == verdict
    series = [rows("lenet_1c1f", 512, 8.5, half), rows("lenet_1c1f", 1024, 10.0, half)]
    # 8.5 is 15 % below 10: outside a 10 % tolerance, unless the intervals leave it open
    expected = "does not hold here" if half in (None, 0.01) else "cannot tell at this noise level"
    assert batch_saturates(series).verdict == expected
