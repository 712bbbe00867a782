"""The channel-padding terms' worth: refit the models of a `latency_model.py` run folder with
`model fit --channel-block 1` (no padding terms: the form before them), 8 and 16, and score each
on that folder's held-out cells (`model validate --no-measure`: nothing is measured again).

    python benchmarks/latency_blocks.py --out /tmp/latency --seed 1   # a latency_model.py run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BLOCKS = (1, 8, 16)


def score(out: Path, files: list[Path], held: Path, block: int, seed: int, nets: int
          ) -> dict[str, float]:
    model = out / f"blocks_{held.stem}_{len(files)}_{block}.json"
    for argv in (["model", "fit", *map(str, files), "-o", str(model), "--force", "--channel-block",
                  str(block), "--no-profiles"],
                 ["model", "validate", "-m", str(model), "--results", str(held), "--seed", str(seed),
                  "--nets", str(nets), "--no-measure", "--json"]):
        done = subprocess.run(["cnndeploy", *argv], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"cnndeploy {' '.join(argv)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout)["summary"]["additive"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a latency_model.py run folder")
    parser.add_argument("--seed", type=int, required=True, help="the run's held-out seed")
    parser.add_argument("--nets", type=int, default=50, help="the run's held-out nets")
    args = parser.parse_args()
    for short in ("ort", "ov"):
        fit, cov, held = (args.out / f"{k}_{short}.jsonl" for k in ("fit", "cov", "held"))
        for name, files in (("groups", [fit]), ("groups + coverage", [fit, cov])):
            if not all(f.exists() for f in files):
                continue
            cells = [f"block {b}: {s['within_10']:.0%} / {s['within_20']:.0%} "
                     f"(median {s['median_abs_error']:.1%})"
                     for b in BLOCKS for s in [score(args.out, files, held, b, args.seed, args.nets)]]
            print(f"{short:4s} {name:18s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
