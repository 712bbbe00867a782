"""Issue 10's `bench` repeatability: the same `cnndeploy bench` (median of 3 fresh processes)
invoked twice, minutes apart, on the same machine; how far the two figures of each row differ.

Each round runs every net once, one invocation after another (never two at once: on 2 cores
they would measure each other), so the two invocations of a net are a full round apart.
Printed per (net, batch, row): both figures, their ratio, both 95 % intervals, and whether
they agree within +-3 % (the issue's target) and whether each interval covers the other
figure. The JSON keeps every invocation's rows.

    python benchmarks/bench_repeat.py [--nets lenet_1c1f,lenet_5c1f] [--batch 1024]
        [--rounds 2] [--backends onnxruntime,openvino] [--out results/bench_repeat.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def invoke(net: str, batch: int, backends: str, processes: int) -> list[dict[str, Any]]:
    cmd = ["cnndeploy", "bench", "--spec", net, "-b", backends, "--batch", str(batch),
           "--processes", str(processes), "--no-save", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return list(json.loads(done.stdout)["rows"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="lenet_1c1f,lenet_5c1f")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_repeat.json")
    args = parser.parse_args()
    nets = args.nets.split(",")
    runs: dict[str, list[list[dict[str, Any]]]] = {n: [] for n in nets}
    started = time.monotonic()
    for r in range(args.rounds):
        for net in nets:
            t0 = time.monotonic()
            runs[net].append(invoke(net, args.batch, args.backends, args.processes))
            print(f"round {r + 1} {net}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    lines = [f"bench repeatability: median of {args.processes} fresh processes per invocation, "
             f"{args.rounds} invocations per net, batch {args.batch}, "
             f"{time.strftime('%Y-%m-%d')}, {time.monotonic() - started:.0f} s in all", ""]
    agree = total = 0
    for net in nets:
        first = runs[net][0]
        for i, row in enumerate(first):
            figures = [inv[i]["tiles_per_ms"] for inv in runs[net]]
            cis = [inv[i].get("tiles_per_ms_ci95") for inv in runs[net]]
            worst = max(figures) / min(figures) - 1
            ok = worst <= 0.03
            covered = all(c is not None and c[0] <= f <= c[1]
                          for c in cis for f in figures)
            agree += ok
            total += 1
            lines.append(f"{net:<11} {row['backend']:<30} " + "  ".join(
                f"{f:7.2f} [{c[0]:.2f}..{c[1]:.2f}]" if c else f"{f:7.2f}"
                for f, c in zip(figures, cis, strict=True)) + f"  max/min-1 {worst:5.1%}  "
                f"{'within' if ok else 'OUTSIDE'} +-3 %; intervals cover the others: "
                f"{'yes' if covered else 'no'}")
    lines += ["", f"rows within +-3 % across invocations: {agree} of {total}"]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "runs": runs, "summary": lines}, indent=1) + "\n")
    args.out.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
