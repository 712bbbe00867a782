"""Why do ONNX Runtime's 2-thread figures jump between two levels across processes on 2 cores?

Each setting runs lenet_1c1f (untrained, exported once) at batch 1024 in ``--processes`` fresh
processes, one after another and interleaved across settings (so drift lands on every setting
alike); each process times 2 s with the one harness (``bench.timing.time_runner``). Settings:
ONNX Runtime 2 threads with spinning on (its default) and off, 1 thread, and 2 threads pinned
to one core each (``session.intra_op_thread_affinities``). Per setting: the process medians,
their spread ((max - min) / median), and whether they split into two levels (the largest gap
between sorted medians is over 3x the median gap within the groups it separates).

    python benchmarks/ort_bimodality.py [--processes 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SETTINGS: dict[str, dict[str, Any]] = {
    "2t spin (default)": {"threads": 2, "spinning": None},
    "2t no-spin": {"threads": 2, "spinning": False},
    "1t": {"threads": 1, "spinning": None},
    "2t pinned": {"threads": 2, "spinning": None, "affinity": True},
}


def one(model: str, setting: str) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from cnn_deploy.backends.base import Runner, Signature
    from cnn_deploy.bench.timing import TimingConfig, summarise, time_runner

    opts = SETTINGS[setting]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.intra_op_num_threads = opts["threads"]
    so.inter_op_num_threads = 1
    if opts.get("spinning") is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts["spinning"] else "0")
    if opts.get("affinity"):  # the calling thread on CPU 0, ORT's one worker on CPU 1 (1-based "2")
        os.sched_setaffinity(0, {0})
        so.add_session_config_entry("session.intra_op_thread_affinities", "2")
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    class Bare(Runner):  # the harness needs a Runner; this one is a bare session
        @property
        def label(self) -> str:
            return setting

        def _activate(self) -> None:
            return None

        @property
        def signature(self) -> Signature:
            return Signature(name, (None, 1, 28, 28))

        def stage(self, x: np.ndarray) -> Any:
            return x

        def run(self, staged: Any) -> Any:
            return session.run(None, {name: staged})

        def to_numpy(self, output: Any) -> np.ndarray:
            return np.asarray(output[0])

    x = np.random.default_rng(0).integers(0, 256, (1024, 1, 28, 28)).astype(np.float32)
    samples = time_runner(Bare(), x, TimingConfig(warmup_ms=300, min_duration_ms=2000))
    stats = summarise(samples.latency_ms, 1024)
    return {"tiles_per_ms": stats.tiles_per_ms, "cv": stats.cv}


def cpu_times() -> list[int]:
    with open("/proc/stat") as fh:
        return [int(v) for v in fh.readline().split()[1:9]]


def stolen(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor gave to other guests (/proc/stat 'steal')."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    return d[7] / max(sum(d), 1)


def rows_median(rows: dict[str, dict[str, Any]], value: float) -> float:
    return next(r["median"] for r in rows.values() if value in r["tiles_per_ms"])


def two_levels(values: list[float]) -> bool:
    v = sorted(values)
    if len(v) < 4:
        return False
    gaps = [b - a for a, b in itertools.pairwise(v)]
    k = max(range(len(gaps)), key=gaps.__getitem__)
    inner = [g for i, g in enumerate(gaps) if i != k]
    return gaps[k] > 3 * max(statistics.median(inner), 1e-9) and gaps[k] > 0.05 * statistics.median(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    from cnn_deploy.arch import NetSpec
    from cnn_deploy.export import export_spec

    with tempfile.TemporaryDirectory(prefix="cnndeploy-bimodal-") as tmp:
        model = str(export_spec(NetSpec.from_name("lenet_1c1f"), Path(tmp) / "m.onnx").path)
        got: dict[str, list[float]] = {s: [] for s in SETTINGS}
        steal: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.processes):
            for setting in SETTINGS:  # interleaved: drift spreads over every setting
                before = cpu_times()
                done = subprocess.run([sys.executable, __file__, "--one", model, setting],
                                      capture_output=True, text=True, check=True)
                after = cpu_times()
                got[setting].append(json.loads(done.stdout.strip().splitlines()[-1])["tiles_per_ms"])
                steal[setting].append(stolen(before, after))
    rows = {}
    for setting, values in got.items():
        med = statistics.median(values)
        rows[setting] = {"tiles_per_ms": values, "median": med, "steal": steal[setting],
                         "spread": (max(values) - min(values)) / med, "two_levels": two_levels(values)}
        print(f"{setting:<18} median {med:6.2f} tiles/ms  spread {rows[setting]['spread']:5.1%}  "
              f"two levels: {'yes' if rows[setting]['two_levels'] else 'no '}  "
              + " ".join(f"{v:.1f}" for v in values), flush=True)
        print(f"{'':<18} CPU stolen by the hypervisor while each process ran: "
              + " ".join(f"{v:.0%}" for v in steal[setting]), flush=True)
    every = [(v, st) for r in rows.values() for v, st in zip(r["tiles_per_ms"], r["steal"], strict=True)]
    if len(every) > 2:
        import numpy as np

        corr = float(np.corrcoef([v / rows_median(rows, v) for v, _ in every], [st for _, st in every])[0, 1])
        print(f"correlation of tiles/ms (relative to its setting's median) with stolen CPU: {corr:+.2f}")
    if args.json:
        args.json.write_text(json.dumps({"processes": args.processes, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
