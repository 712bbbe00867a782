#!/usr/bin/env bash
# Create .venv with the CPU build of torch and cnn_deploy (editable) plus the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Which stack: CNNDEPLOY_STACK=cpu|cu12|cu13, else the CUDA major the driver reports
# (`nvidia-smi`: "CUDA Version: 12.4"), else cpu. A GPU stack gets PyPI's CUDA torch, TensorRT,
# onnxruntime-gpu and cuda-python for that major, so the gpu/tensorrt tests run instead of skip.
STACK="${CNNDEPLOY_STACK:-}"
if [ -z "$STACK" ]; then
    STACK=cpu
    if command -v nvidia-smi > /dev/null 2>&1; then
        # a failing nvidia-smi (no driver loaded) must not end setup under pipefail
        major=$({ nvidia-smi 2> /dev/null || true; } | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' \
            | head -n 1)
        case "$major" in 12|13) STACK="cu$major" ;; esac
    fi
fi
case "$STACK" in
    cpu)  # The CPU build first: an unpinned torch would pull a multi-GB CUDA build.
        python -m pip install -q torch==2.13.0
        python -m pip install -q -e '.[cpu,stream,dev]' ;;
    cu12|cu13)
        echo "setup: NVIDIA driver found: installing the CUDA ${STACK#cu} stack (.[gpu-$STACK])" >&2
        # PyPI's torch is built for one CUDA major: take the build for this driver's major
        case "$STACK" in cu12) TORCH_INDEX=cu126 ;; cu13) TORCH_INDEX=cu130 ;; esac
        python -m pip install -q torch --index-url "https://download.pytorch.org/whl/$TORCH_INDEX"
        python -m pip install -q -e ".[gpu-$STACK,stream,dev]" ;;
    *) echo "CNNDEPLOY_STACK must be cpu, cu12 or cu13, got '$STACK'" >&2; exit 2 ;;
esac

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
