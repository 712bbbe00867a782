#!/usr/bin/env bash
# Create .venv with the CPU build of torch and cnn_deploy (editable) plus the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build first: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[cpu,dev]'

# API contract tests (tests/test_tensorrt_runtime.py, tests/test_cuda.py) check every TensorRT
# and CUDA runtime name the GPU backend calls against the real packages. These install and
# import without a GPU; each goes into its own folder under .trt/ (git-ignored), never into
# the venv. Without them those tests skip and say why. CNNDEPLOY_SKIP_CONTRACT=1 skips this.
contract() {  # folder, requirement
    [ -d ".trt/$1" ] && return 0
    python -m pip install -q --target ".trt/$1" "$2" \
        || { rm -rf ".trt/$1"; echo "warning: $2 not installed; its contract tests will skip" >&2; }
}
if [ "${CNNDEPLOY_SKIP_CONTRACT:-0}" != 1 ]; then
    contract 10 tensorrt-lean-cu12==10.16.1.11
    contract 11 tensorrt-lean-cu12==11.4.0.106
    contract cuda12 cuda-bindings==12.9.10
    contract cuda13 cuda-bindings==13.4.4
fi
