#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, lint and types. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/cnndeploy ] || bash scripts/setup.sh
. .venv/bin/activate
export CNNDEPLOY_DATA="${CNNDEPLOY_DATA:-$(cd .. && pwd)/shared/data/mnist}"
ruff check cnn_deploy tests benchmarks
mypy cnn_deploy
# DESIGN.md's layers and independent backends (pyproject.toml [tool.importlinter]): no cycles, no
# import against the flow.
lint-imports
# Jetson's JetPack 6 runs Python 3.10: no 3.10 interpreter installs here, so check statically
# (ruff and mypy also target 3.10 in pyproject.toml).
vermin --no-tips --target=3.10- --violations --eval-annotations cnn_deploy tests benchmarks
python -m pytest "$@"
