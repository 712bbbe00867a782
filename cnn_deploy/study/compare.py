"""`cnndeploy compare`: tiles/ms of one run over another, cell by cell, with the pairs that
cannot be compared (precision, scenario or batch differ; a device record is missing) flagged."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from cnn_deploy.results.tidy import Rows, tidy


def compare(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> Rows:
    """Tiles/ms of B over A per (net, backend, requested batch); a pair is not comparable
    when precision, scenario or batch differ or either side lacks a device record."""
    def index(records: Sequence[dict[str, Any]]) -> dict[tuple[Any, ...], Rows]:
        out: dict[tuple[Any, ...], Rows] = {}
        for r in tidy(records):
            if r["kind"] == "bench" and isinstance(r.get("tiles_per_ms"), (int, float)):
                out.setdefault((r["net"], r["backend"], r["requested_batch"]), []).append(r)
        return out

    ia, ib = index(a), index(b)
    rows: Rows = []
    for key in [k for k in ia if k in ib]:
        ra, rb = ia[key], ib[key]
        why = [f"{field_} differs" for field_ in ("precision", "scenario", "batch")
               if {r.get(field_) for r in ra} != {r.get(field_) for r in rb}]
        if not all(r["has_device"] for r in [*ra, *rb]):
            why.append("a device record is missing")
        ta = statistics.median(r["tiles_per_ms"] for r in ra)
        tb = statistics.median(r["tiles_per_ms"] for r in rb)
        rows.append({"net": key[0], "backend": key[1], "batch": key[2],
                     "precision": "/".join(sorted({str(r.get("precision")) for r in [*ra, *rb]})),
                     "tiles_per_ms_a": ta, "tiles_per_ms_b": tb,
                     "ratio_b_over_a": tb / ta if ta > 0 else None,
                     "comparable": not why, "why": "; ".join(why)})
    return rows
