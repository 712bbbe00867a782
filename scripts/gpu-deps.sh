#!/usr/bin/env bash
# Fill .gpu-deps/ (git-ignored) with the pure-Python packages cnn_deploy needs beyond what the
# lent GPU machine has (it has torch, numpy, onnx, onnxruntime, cuda-bindings, nvidia-ml-py and
# no network): wheels for Python ${PYVER:-3.12} on x86-64, to travel with the working tree
# (the device tool's `carry`). scripts/gpu-check.sh puts .gpu-deps on PYTHONPATH when present.
# matplotlib (report figures) is left out to stay small: the report step then says so.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu-deps
python3 -m pip install -q --no-deps --only-binary=:all: --target .gpu-deps \
    --python-version "${PYVER:-3.12}" --implementation cp --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    typer click rich shellingham markdown-it-py mdurl pygments typing_extensions \
    onnxscript onnx_ir ml_dtypes packaging
du -sh .gpu-deps
