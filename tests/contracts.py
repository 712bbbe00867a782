"""The one check that API names exist in a real package: "does ``tensorrt_lean`` 11.4 have
``IExecutionContext.execute_async_v3``?", asked of the packages scripts/setup.sh installs
under ``.trt/<folder>`` (never the venv), in a subprocess with only that folder on the path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

CONTRACT_DIR = Path(__file__).resolve().parents[1] / ".trt"

_CHECKER = """
import importlib, json, sys
module = importlib.import_module(sys.argv[1])
required, alternatives = json.loads(sys.argv[2]), json.loads(sys.argv[3])
def has(dotted):
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True
missing = [n for n in required if not has(n)]
missing += ["|".join(g) for g in alternatives if not any(has(n) for n in g)]
root = importlib.import_module(sys.argv[4])
print(json.dumps({"version": getattr(root, "__version__", "?"), "missing": missing,
                  "builder": has("Builder") or has("OnnxParser")}))
"""


def missing_names(folder: str, module: str, names: Sequence[str],
                  alternatives: Sequence[Sequence[str]] = (), version_of: str | None = None
                  ) -> dict[str, Any]:
    """``{"version", "missing", "builder"}`` for ``names`` (dotted, from ``module``) in the
    package installed under ``.trt/<folder>`` (``version_of``: the module whose
    ``__version__`` to report, default ``module``); skips, saying why, where it is absent."""
    path = CONTRACT_DIR / folder
    top = module.split(".")[0]
    if not (path / top).is_dir():
        pytest.skip(f"{path} holds no {top}: run scripts/setup.sh to install the contract packages")
    env = {**os.environ, "PYTHONPATH": str(path)}
    done = subprocess.run([sys.executable, "-c", _CHECKER, module, json.dumps(list(names)),
                           json.dumps([list(g) for g in alternatives]), version_of or module],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
