"""`cnndeploy stream` on this machine: how much of the bare model's tiles/ms survives the pipeline.

A 640x480 FFV1 video of MNIST test digits (``stream.synth``, 300 frames by default) runs
through ``stream.pipeline.run_stream`` with lenet_1c1f (untrained weights: speed does not
depend on them) at stride 28 (17x22 = 374 tiles per frame) and 14 (33x44 = 1,452), on ONNX
Runtime and OpenVINO at their defaults, each frame one batch. Per configuration: sustained fps,
tiles/ms in the pipeline (tiles / wall time of the stream, warm-up frame excluded), the same
runner's bare tiles/ms at the same batch right after (the one harness, ``bench.timing``), their
ratio, the ratio against the bare figure with `cnndeploy bench`'s defaults (ONNX Runtime's
threads spin there; a stream turns spinning off), and per-stage medians. Every configuration
runs ``--repeats`` times in a fresh process each; the table shows the median repeat (by ratio)
and the range.

    python benchmarks/stream_cpu.py [--frames 300] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONFIGS = [(backend, stride) for stride in (28, 14) for backend in ("onnxruntime", "openvino")]


def one(model: str, video: str, backend: str, stride: int) -> dict[str, Any]:
    """One configuration in this (fresh) process."""
    from cnn_deploy.bench.timing import TimingConfig
    from cnn_deploy.stream.classifier import TileClassifier
    from cnn_deploy.stream.pipeline import StreamConfig, run_stream
    from cnn_deploy.stream.sources import open_source
    from cnn_deploy.stream.tiling import TilingConfig

    config = StreamConfig(bare_timing=TimingConfig(warmup_ms=200, min_duration_ms=2000))
    with TileClassifier.from_path(model, backend=backend,
                                  tiling=TilingConfig(stride=(stride, stride))) as clf:
        run = run_stream(open_source(video), clf, config)
        label = clf.runner.label
    assert run.bare is not None
    # the same model bare with `cnndeploy bench`'s defaults (ONNX Runtime spins there)
    from cnn_deploy.backends import registry
    from cnn_deploy.bench.timing import summarise, time_runner

    x = open_source(video).read()
    with TileClassifier.from_path(model, backend=backend,
                                  tiling=TilingConfig(stride=(stride, stride))) as probe:
        tiles = probe.prepare(x).tiles
    with TileClassifier.for_target(_target(model), backend=backend,
                                   options=registry.get(backend).resolve({})) as plain:
        samples = time_runner(plain.runner, tiles, config.bare_timing)
    bench_default = summarise(samples.latency_ms, len(tiles)).tiles_per_ms
    stages = run.stage_stats()
    return {"backend": label, "stride": stride, "tiles_per_frame": run.tiles // run.frames,
            "frames": run.frames, "fps": run.fps, "pipeline_tiles_per_ms": run.tiles_per_ms,
            "bare_tiles_per_ms": run.bare.tiles_per_ms, "ratio": run.ratio,
            "bench_default_tiles_per_ms": bench_default,
            "ratio_vs_bench_default": run.tiles_per_ms / bench_default,
            "median_ms": {k: v["median_ms"] for k, v in stages.items()}}


def _target(model: str) -> Any:
    from cnn_deploy.bench.targets import onnx_target

    return onnx_target(Path(model), [])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # model video backend stride
    args = parser.parse_args()
    if args.one:
        model, video, backend, stride = args.one
        print(json.dumps(one(model, video, backend, int(stride))))
        return

    from cnn_deploy.arch import NetSpec
    from cnn_deploy.device import library_versions
    from cnn_deploy.export import export_spec
    from cnn_deploy.stream.synth import make_video

    with tempfile.TemporaryDirectory(prefix="cnndeploy-stream-bench-") as tmp:
        model = export_spec(NetSpec.from_name("lenet_1c1f"), Path(tmp) / "lenet_1c1f.onnx").path
        video = Path(tmp) / "digits.mkv"
        make_video(video, frames=args.frames)
        rows = []
        for backend, stride in CONFIGS:
            repeats = []
            for _ in range(args.repeats):
                done = subprocess.run([sys.executable, __file__, "--one", str(model), str(video),
                                       backend, str(stride)], capture_output=True, text=True,
                                      check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                repeats.append(json.loads(done.stdout.strip().splitlines()[-1]))
            repeats.sort(key=lambda r: r["ratio"])
            row = dict(repeats[len(repeats) // 2])
            row["ratio_range"] = [repeats[0]["ratio"], repeats[-1]["ratio"]]
            row["fps_range"] = [min(r["fps"] for r in repeats), max(r["fps"] for r in repeats)]
            row["repeats"] = repeats
            rows.append(row)
            print(f"{row['backend']:<34} stride {stride:>2} {row['tiles_per_frame']:>5} tiles/frame "
                  f"{row['fps']:6.1f} fps  pipeline {row['pipeline_tiles_per_ms']:6.2f}  bare "
                  f"{row['bare_tiles_per_ms']:6.2f} tiles/ms  ratio {row['ratio']:.0%} "
                  f"({row['ratio_range'][0]:.0%}..{row['ratio_range'][1]:.0%}), vs bench defaults "
                  f"{row['ratio_vs_bench_default']:.0%}  capture "
                  f"{row['median_ms']['capture']:.2f} tile {row['median_ms']['tile']:.2f} infer "
                  f"{row['median_ms']['infer']:.2f} ms", flush=True)
    out = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
           "versions": library_versions(("onnxruntime", "openvino", "opencv-python-headless")),
           "frames": args.frames, "repeats": args.repeats, "rows": rows,
           "median_ratio": statistics.median(r["ratio"] for r in rows)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
