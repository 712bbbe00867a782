#!/usr/bin/env bash
# The GPU evidence run (issue 9): one command that, on a machine with an NVIDIA GPU, runs every
# `gpu` test, the cuda-python plumbing, NVML, torch-CUDA benchmarks (events, CUDA graphs) and a
# 10-cell torch-CUDA mini-sweep plus its report, in under 8 minutes, and writes one JSON
# summary (summary.json) and every log under $OUT (default: a temporary folder, printed).
#
#   bash scripts/gpu-check.sh            # on the GPU machine: system python, PYTHONPATH=.
#   bash scripts/gpu-check.sh --dry-run  # here, on the CPU: the same steps on device cpu, short
#
# Uses $PYTHON (default: .venv/bin/python if present, else python3) with the repository on
# PYTHONPATH (no install needed). Packages that machine may lack and cannot download (typer,
# rich, onnxscript, matplotlib) can travel in .gpu-deps/ (scripts/gpu-deps.sh fills it for
# Python 3.12 on x86-64), which is put on PYTHONPATH when present.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-$(mktemp -d -t cnndeploy-gpu-check-XXXX)}"
mkdir -p "$OUT/logs"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Only where this python lacks them: .gpu-deps holds wheels for the GPU machine's Python.
if [ -d .gpu-deps ] && ! "$PYTHON" -c "import typer, rich, onnxscript" 2> /dev/null; then
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu-deps"
fi
# Real digits: $CNNDEPLOY_DATA, else ./data/mnist (copy ../shared/data/mnist there and carry
# `data` to a lent machine: ../shared does not travel), else ../shared/data/mnist. Without
# them every cell times uniform noise (speed does not depend on the pixels) and says so.
if [ -z "${CNNDEPLOY_DATA:-}" ]; then
    if [ -d data/mnist ]; then CNNDEPLOY_DATA="$PWD/data/mnist"
    else CNNDEPLOY_DATA="$(cd .. && pwd)/shared/data/mnist"; fi
fi
export CNNDEPLOY_DATA
BUDGET="${BUDGET:-470}"  # seconds for every step together (the lent machine: 600 s a call)
DEVICE=cuda; DURATION=1; SWEEP_DURATION=0.3
if [ "$DRY" = 1 ]; then DEVICE=cpu; DURATION=0.1; SWEEP_DURATION=0.05; fi
CLI=("$PYTHON" -m cnn_deploy)
STEPS="$OUT/steps.jsonl"; : > "$STEPS"
START=$(date +%s)

step() {  # name, time limit in s, command... (within what is left of $BUDGET)
    local name=$1 limit=$2; shift 2
    local t0 t1 rc left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 15 ]; then
        printf '{"step": "%s", "rc": 0, "ms": 0, "skipped": "out of time (BUDGET=%s s)"}\n' \
            "$name" "$BUDGET" >> "$STEPS"
        echo "$name: skipped, out of time"; summarize; return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    t0=$(date +%s%N)
    timeout "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    printf '{"step": "%s", "rc": %d, "ms": %d}\n' "$name" "$rc" "$(( (t1 - t0) / 1000000 ))" \
        >> "$STEPS"
    echo "$name: exit $rc ($(tail -n 1 "$OUT/logs/$name.log" | cut -c1-150))"
    summarize  # after every step: a run cut short still leaves its figures
}

summarize() {
    "$PYTHON" - "$OUT" "$START" "$CNNDEPLOY_DATA" <<'PY' > "$OUT/summary.json.part" \
        && mv "$OUT/summary.json.part" "$OUT/summary.json"
import json, os, pathlib, sys, time
out, start, data = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line]
cells = []
for name in ("bench.jsonl", "sweep.jsonl"):
    path = out / name
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        phases = r.get("phases_ms") or {}
        med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
        cells.append({"file": name, "net": (r.get("model") or {}).get("name"),
                      "label": (r.get("backend") or {}).get("label"), "batch": r.get("batch"),
                      "tiles_per_ms": (r.get("stats") or {}).get("tiles_per_ms"),
                      "median_ms": (r.get("stats") or {}).get("median_ms"),
                      "wall_ms": r.get("wall_ms"), "input": r.get("input"),
                      "phases_median_ms": {k: med(v) for k, v in phases.items()},
                      "enqueue_median_ms": med(r.get("enqueue_ms") or []),
                      "warnings": r.get("warnings")})
streams = []
for line in (out / "stream.jsonl").read_text().splitlines() if (out / "stream.jsonl").is_file() else []:
    try:
        r = json.loads(line)
    except json.JSONDecodeError:
        continue
    streams.append({k: r.get(k) for k in ("frames", "tiles", "batch", "fps", "tiles_per_ms",
                                          "pipeline_vs_bare", "dropped", "capture", "stages")}
                   | {"label": (r.get("backend") or {}).get("label")})
env = {}
try:
    env = json.loads((out / "environment.json").read_text())
except (OSError, json.JSONDecodeError):
    pass
print(json.dumps({"ok": all(s["rc"] == 0 for s in steps), "seconds": time.time() - start,
                  "mnist": data if os.path.isdir(data) else None,
                  "steps": steps, "device": env.get("device"), "versions": env.get("versions"),
                  "cells": cells, "streams": streams}, indent=1, default=str))
PY
}

echo "gpu-check: device $DEVICE, output in $OUT"
step environment 60 "$PYTHON" -c "
import json, platform, sys
from cnn_deploy.device import device_record, library_versions
from cnn_deploy.backends import registry
print(json.dumps({'python': sys.version.split()[0], 'device': device_record(),
                  'versions': library_versions(registry.packages()),
                  'backends': [a.__dict__ for a in registry.probe_all()]}, default=str))"
cp "$OUT/logs/environment.log" "$OUT/environment.json" 2>/dev/null
step backends 60 "${CLI[@]}" backends
if [ "$DRY" = 1 ]; then
    step gpu_tests 120 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu --co tests
else
    step gpu_tests 240 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -x tests \
        --junitxml "$OUT/gpu-tests.xml"
fi
step cuda_plumbing 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py
for graph in false true; do
    [ "$DEVICE" = cpu ] && [ "$graph" = true ] && continue  # CUDA graphs need CUDA
    step "bench_torch_graph_$graph" 120 "${CLI[@]}" bench --spec lenet_3c1f -b torch \
        -o "torch.device=$DEVICE" -o "torch.cuda_graph=$graph" --batch 1,256,1024 \
        --duration "$DURATION" --json --results "$OUT/bench.jsonl"
done
step bench_spec_family 120 "${CLI[@]}" bench --spec lenet_5c1f -b torch -o "torch.device=$DEVICE" \
    --batch 1024 --duration "$DURATION" --json --results "$OUT/bench.jsonl"
step mini_sweep 180 "${CLI[@]}" sweep --grid 'conv_layers=1..5;fc_layers=1,3;batch=256' \
    -b torch -o "torch.device=$DEVICE" --duration "$SWEEP_DURATION" --passes 1 \
    --results "$OUT/sweep.jsonl"
if [ "$DRY" = 0 ] && "$PYTHON" -c "import tensorrt; tensorrt.Builder" 2> /dev/null; then
    step trt_sweep 240 "${CLI[@]}" sweep --grid 'conv_layers=1..5;fc_layers=1;batch=256' \
        -b tensorrt --precision fp16 --duration "$SWEEP_DURATION" --passes 1 \
        --results "$OUT/sweep.jsonl"
    step trt_profile_family 180 "${CLI[@]}" profile --spec 'lenet_{1..5}c1f' -b tensorrt \
        --batch 256 --runs 5 --png "$OUT/profile_trt.png" --results "$OUT/profile.jsonl"
else  # the lent H200 has no TensorRT; a machine with it runs both
    echo '{"step": "tensorrt", "rc": 0, "ms": 0, "skipped": "no TensorRT builder"}' >> "$STEPS"
    echo "tensorrt: skipped (no TensorRT builder here)"
fi
# the camera pipeline on the GPU (torch CUDA): needs OpenCV, which the lent machine may lack
if "$PYTHON" -c "import cv2" 2> /dev/null; then
    FRAMES=200; [ "$DRY" = 1 ] && FRAMES=10
    step stream_video 60 "${CLI[@]}" data video "$OUT/digits.mkv" --frames "$FRAMES"
    step stream_model 60 "${CLI[@]}" export --spec lenet_1c1f --out "$OUT/lenet_1c1f.onnx"
    step stream_torch 120 "${CLI[@]}" stream "$OUT/digits.mkv" --model "$OUT/lenet_1c1f.onnx" \
        -b torch -o "torch.device=$DEVICE" --stride 14 --results "$OUT/stream.jsonl"
else
    echo '{"step": "stream", "rc": 0, "ms": 0, "skipped": "OpenCV is not installed"}' >> "$STEPS"
    echo "stream: skipped (OpenCV is not installed)"
fi
if "$PYTHON" -c "import matplotlib" 2> /dev/null; then
    step report 120 "${CLI[@]}" report "$OUT/sweep.jsonl" "$OUT/bench.jsonl" -o "$OUT/report"
else  # scripts/gpu-deps.sh leaves matplotlib out; the records above hold every figure
    echo '{"step": "report", "rc": 0, "ms": 0, "skipped": "matplotlib is not installed"}' >> "$STEPS"
    echo "report: skipped (matplotlib is not installed)"
fi

summarize
echo "summary: $OUT/summary.json ($(($(date +%s) - START)) s)"
"$PYTHON" -c "import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s['ok'] else 1)" \
    "$OUT/summary.json"
