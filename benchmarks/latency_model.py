"""Issue 12's measurement: fit the latency models on the four thesis groups, validate them on
held-out networks measured fresh, and carry a model to another backend from 10 measurements.

Everything runs through the `cnndeploy` command a user runs (one subprocess per step, one
after another: nothing else may run meanwhile on 2 cores). Steps whose output exists are
skipped, so a killed run resumes. Per backend (ONNX Runtime 2 threads, OpenVINO):

1. ``sweep --group all`` (noise-aware, 2-3 passes) -> ``fit_<b>.jsonl``
2. ``model fit`` -> ``<b>.json``
3. ``model validate --nets N`` (two passes per held-out cell, fresh processes) -> ``held_<b>.jsonl``

then ``model adapt`` of the ONNX Runtime model to OpenVINO from 10 of OpenVINO's sweep cells,
validated on OpenVINO's held-out cells, and (``--one-thread``) to ONNX Runtime at 1 thread
from a 10-cell grid, validated on its own held-out cells. The summary (JSON and text) holds
every figure: the share of held-out cells within +-10 % / +-20 %, the median error, both forms,
and the floor: how often the two passes of one held-out cell agree within +-10 %.

    python benchmarks/latency_model.py --out /tmp/latency [--nets 50] [--one-thread]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BACKENDS = {"ort": "onnxruntime", "ov": "openvino"}
PROFILE_BATCHES = (16, 512)
ONE_THREAD_GRID = "conv_layers=1,3,5;fc_layers=1,3;depth=10,40;batch=16,1024"  # 16 cells, 10 used


def run(*args: Any) -> str:
    cmd = ["cnndeploy", *map(str, args)]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


SEED = 1


def validate(model: Path, held: Path, nets: int, measure: bool = True) -> dict[str, Any]:
    out = run("model", "validate", "-m", model, "--nets", nets, "--seed", SEED, "--results", held,
              "--json", *([] if measure else ["--no-measure"]))
    return dict(json.loads(out)["summary"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for records and models")
    parser.add_argument("--nets", type=int, default=50, help="held-out networks per backend")
    parser.add_argument("--one-thread", action="store_true",
                        help="also adapt to ONNX Runtime at 1 thread (about 5 more minutes)")
    parser.add_argument("--coverage", action="store_true",
                        help="also fit on the thesis groups plus `sweep --group coverage` "
                             "(about 4 more minutes) and validate those models on the same cells")
    parser.add_argument("--seed", type=int, default=1, help="seed of the held-out draw")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the groups' nets at batches 16 and 512 and fit with "
                             "those per-layer rows added (about 5 more minutes per backend)")
    args = parser.parse_args()
    global SEED
    SEED = args.seed
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for short, backend in BACKENDS.items():
        fit = out / f"fit_{short}.jsonl"
        run("sweep", "--group", "all", "-b", backend, "--results", fit)
        model = out / f"{short}.json"
        run("model", "fit", fit, "-o", model, "--force")
        summary[short] = {"fit": json.loads(model.read_text())["errors"],
                          "held_out": validate(model, out / f"held_{short}.jsonl", args.nets)}
    adapted = out / "ort_to_ov.json"
    run("model", "adapt", out / "fit_ov.jsonl", "-m", out / "ort.json", "-o", adapted, "--force")
    summary["ort_to_ov"] = {"held_out": validate(adapted, out / "held_ov.jsonl", args.nets, False)}
    if args.one_thread:
        few = out / "few_ort1t.jsonl"
        run("sweep", "--grid", ONE_THREAD_GRID, "-b", "onnxruntime", "-o", "onnxruntime.threads=1",
            "--passes", "1", "--results", few)
        one = out / "ort_to_1t.json"
        run("model", "adapt", few, "-m", out / "ort.json", "-o", one, "--force")
        summary["ort_to_1t"] = {"held_out": validate(one, out / "held_ort1t.jsonl", args.nets)}
    if args.coverage:
        for short, backend in BACKENDS.items():
            cov = out / f"cov_{short}.jsonl"
            run("sweep", "--group", "coverage", "-b", backend, "--results", cov)
            model = out / f"{short}_cov.json"
            run("model", "fit", out / f"fit_{short}.jsonl", cov, "-o", model, "--force")
            summary[f"{short}+coverage"] = {"fit": json.loads(model.read_text())["errors"],
                                            "held_out": validate(model, out / f"held_{short}.jsonl",
                                                                 args.nets)}
        adapted = out / "ort_cov_to_ov.json"
        run("model", "adapt", out / "fit_ov.jsonl", "-m", out / "ort_cov.json", "-o", adapted,
            "--force")
        summary["ort+coverage_to_ov"] = {"held_out": validate(adapted, out / "held_ov.jsonl",
                                                              args.nets, False)}
        if args.one_thread:
            one = out / "ort_cov_to_1t.json"
            run("model", "adapt", out / "few_ort1t.jsonl", "-m", out / "ort_cov.json", "-o", one,
                "--force")
            summary["ort+coverage_to_1t"] = {"held_out": validate(one, out / "held_ort1t.jsonl",
                                                                  args.nets)}
    if args.profile:
        from cnn_deploy.arch import THESIS_GROUPS, thesis_group

        nets = ",".join(dict.fromkeys(s.name for g in THESIS_GROUPS for s in thesis_group(g)[0]))
        for short, backend in BACKENDS.items():
            prof = out / f"prof_{short}.jsonl"
            if not prof.exists():  # profile appends: a rerun would add a second copy
                for batch in PROFILE_BATCHES:
                    run("profile", "--spec", nets, "-b", backend, "--batch", batch, "--runs", 5,
                        "--results", prof.with_suffix(".part"))
                prof.with_suffix(".part").rename(prof)
            fits = {"profile": [out / f"fit_{short}.jsonl", prof]}
            if args.coverage:
                fits["coverage+profile"] = [*fits["profile"], out / f"cov_{short}.jsonl"]
            for name, files in fits.items():
                model = out / f"{short}_{name.replace('+', '_')}.json"
                run("model", "fit", *files, "-o", model, "--force")
                summary[f"{short}+{name}"] = {
                    "fit": json.loads(model.read_text())["errors"],
                    "held_out": validate(model, out / f"held_{short}.jsonl", args.nets)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for name, s in summary.items():
        for form in ("additive", "thesis"):
            h = s["held_out"][form]
            print(f"{name:10s} {form:8s}: {h['n']:.0f} held-out cells, within +-10 % "
                  f"{h['within_10']:.0%}, within +-20 % {h['within_20']:.0%}, median |error| "
                  f"{h['median_abs_error']:.1%}, inside its interval {h['covered']:.0%}")
        for floor, what in (("repeat", "two passes of one cell agree"),
                            ("single", "one pass vs the pair's mean")):
            r = s["held_out"].get(floor) or {}
            if r:
                print(f"{name:10s} floor   : {what}: within +-10 % {r['within_10']:.0%}, within "
                      f"+-20 % {r['within_20']:.0%}, median |difference| {r['median_abs_error']:.1%}")


if __name__ == "__main__":
    main()
