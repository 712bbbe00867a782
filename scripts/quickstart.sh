#!/usr/bin/env bash
# Set up (if needed) and run the main job: train lenet_1c1f, export it, benchmark it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/cnndeploy ] || bash scripts/setup.sh
. .venv/bin/activate
cnndeploy quickstart "$@"
