"""How far two complete sweeps of the same grid on the same machine disagree.

Run ``cnndeploy sweep --group all --results a.jsonl`` twice (minutes apart, nothing else
running), then ``python benchmarks/sweep_agreement.py a1.jsonl a2.jsonl``. Per cell (net,
batch, backend): the median tiles/ms over the cell's records in each file and their 95 %
intervals (``study.report.median_by``: the bootstrap over records and iterations); printed: the
share of cells within +-5 % and +-10 % of each other, the median and range of the ratio, the
median interval half-width, how many cells' intervals overlap, and each thesis conclusion
from both files side by side (they should read the same).

    python benchmarks/sweep_agreement.py A.jsonl B.jsonl [A2.jsonl B2.jsonl ...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any


def cells(path: Path) -> tuple[dict[tuple[Any, ...], dict[str, Any]], list[dict[str, Any]]]:
    from cnn_deploy.results.tidy import load, tidy
    from cnn_deploy.study.report import median_by

    rows = tidy(load([path])[0])
    med = median_by([r for r in rows if r["kind"] == "bench"], ["net", "batch", "backend"],
                    "tiles_per_ms")
    return {(r["net"], r["batch"], r["backend"]): r for r in med}, rows


def compare(a: Path, b: Path) -> None:
    from cnn_deploy.study.report import conclusions

    ca, ra = cells(a)
    cb, rb = cells(b)
    keys = sorted(set(ca) & set(cb), key=str)
    ratios = [cb[k]["tiles_per_ms"] / ca[k]["tiles_per_ms"] for k in keys]
    within = {t: sum(abs(r - 1) <= t for r in ratios) for t in (0.05, 0.10)}
    halves = [(ca[k]["ci_hi"] - ca[k]["ci_lo"]) / 2 / ca[k]["tiles_per_ms"] for k in keys
              if ca[k].get("ci_lo") is not None]
    overlap = sum(1 for k in keys if ca[k].get("ci_lo") is not None and cb[k].get("ci_lo") is not None
                  and ca[k]["ci_lo"] <= cb[k]["ci_hi"] and cb[k]["ci_lo"] <= ca[k]["ci_hi"])
    print(f"{a.name} vs {b.name}: {len(keys)} cells; within +-5 %: {within[0.05]} "
          f"({within[0.05] / len(keys):.0%}); within +-10 %: {within[0.10]} "
          f"({within[0.10] / len(keys):.0%}); median |difference| "
          f"{statistics.median(abs(r - 1) for r in ratios):.1%}; ratio range {min(ratios):.2f}.."
          f"{max(ratios):.2f}x; median 95 % interval +-{statistics.median(halves) if halves else 0:.1%}; "
          f"intervals overlapping in {overlap}/{len(keys)} cells")
    for x, y in zip(conclusions(ra), conclusions(rb), strict=True):
        print(f"  {x.claim}: {x.verdict} | {y.verdict}" + ("" if x.verdict == y.verdict else "  DIFFERS"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="pairs of results files")
    args = parser.parse_args()
    if len(args.files) % 2:
        parser.error("give the results files in pairs")
    for a, b in zip(args.files[::2], args.files[1::2], strict=True):
        compare(a, b)


if __name__ == "__main__":
    main()
