"""The report's latency-model section: the thesis's own model against its own Table 2, both
model forms fitted to each device and backend in the records (validated on the held-out
cells of `cnndeploy model validate` where the records hold them), and the Pareto front of
accuracy vs tiles/ms where trained runs give accuracies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_deploy.arch import NetSpec
from cnn_deploy.errors import PredictError
from cnn_deploy.results.tidy import Rows
from cnn_deploy.study import heldout, perfmodel
from cnn_deploy.study.modelfiles import HELD_OUT, fit_source, fittable


@dataclass
class LatencySection:
    thesis: Rows  # the thesis's model vs its Table 2
    fits: Rows = field(default_factory=list)  # per source and form: fit and validation figures
    pngs: list[tuple[str, Path]] = field(default_factory=list)  # (title, file)


def thesis_rows(table2: dict[str, dict[str, float]]) -> Rows:
    """Eq. 14-18 with the published GTX960 constants against Table 2's measured tiles/ms."""
    out = []
    for net, row in table2.items():
        predicted = perfmodel.published_thesis(NetSpec.from_name(net))
        out.append({"net": net, "eq. 13 (published constants)": predicted,
                    "Table 2 measured": row["tiles_per_ms"],
                    "error": f"{predicted / row['tiles_per_ms'] - 1:+.0%}"})
    return out


def section(rows: Rows, table2: dict[str, dict[str, float]], out: Path) -> LatencySection:
    result = LatencySection(thesis_rows(table2))
    fit_rows = fittable(rows)
    held_rows = [r for r in rows if r.get("sweep_group") == HELD_OUT]
    for i, source in enumerate(perfmodel.sources(fit_rows), start=1):
        try:
            model, _ = fit_source(fit_rows, source)  # as `model fit` would
        except PredictError:
            continue  # too few cells of this source to fit: nothing to say
        validation = _validate(model, held_rows)
        for form in perfmodel.FORMS:
            e = model.errors[form]
            row: dict[str, Any] = {"device": source.device, "backend": source.backend,
                                   "form": form, "cells": len(model.training),
                                   "fit median |error|": _pct(e["median_abs_error"]),
                                   "left-out-net median |error|": _pct(e["held_out_median_abs_error"])}
            if validation is not None:
                s = validation.summary[form]
                row.update({"held-out cells": int(s["n"]), "within ±10 %": _pct(s["within_10"]),
                            "within ±20 %": _pct(s["within_20"]),
                            "repeat within ±10 %": _pct(validation.summary["repeat"].get("within_10"))})
            result.fits.append(row)
        if validation is not None:
            title = f"Predicted vs measured, held-out nets: {source.describe()}"
            result.pngs.append((title, heldout.plot(validation, out / f"heldout_{i}.png", title)))
    front = pareto_plot(rows, out / "pareto.png")
    if front is not None:
        result.pngs.append(("Accuracy vs tiles/ms: the Pareto front", front))
    return result


def _validate(model: perfmodel.LatencyModel, held: Rows) -> heldout.Validation | None:
    cells = [(p.spec, p.batch) for p in perfmodel.points(held, model.source)] \
        if model.source in perfmodel.sources(held) else []
    cells = [(s, b) for s, b in cells if s.name not in model.nets]
    return heldout.evaluate(model, held, cells) if cells else None


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.0%}"


def pareto_plot(rows: Rows, path: Path) -> Path | None:
    """Test accuracy vs tiles/ms of trained nets (per backend, at the batch most of them were
    measured at), the front drawn as a step line; None without trained records."""
    trained = [r for r in rows if r.get("kind") == "bench" and r.get("test_accuracy") is not None
               and r.get("tiles_per_ms")]
    if not trained:
        return None
    batches = [r["batch"] for r in trained]
    batch = max(set(batches), key=batches.count)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for backend in sorted({str(r["backend"]) for r in trained}):
        best: dict[str, tuple[float, float]] = {}
        for r in trained:
            if str(r["backend"]) == backend and r["batch"] == batch:
                speed, acc = best.get(r["net"], (0.0, 0.0))
                best[r["net"]] = (max(speed, r["tiles_per_ms"]), max(acc, r["test_accuracy"]))
        pts = sorted(best.values(), reverse=True)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=backend)
        front, top = [], -1.0
        for speed, acc in pts:  # fastest first: a point is on the front if more accurate
            if acc > top:
                front.append((speed, acc))
                top = acc
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", lw=0.8)
        for net, (speed, acc) in best.items():
            ax.annotate(net.removeprefix("lenet_"), (speed, acc), fontsize=6)
    ax.set(xlabel=f"tiles/ms at batch {batch}", ylabel="test accuracy", xscale="log",
           title=f"Accuracy vs tiles/ms (batch {batch})")
    ax.legend(fontsize=7)
    from cnn_deploy.files import write_figure

    return write_figure(fig, path, "the Pareto plot", PredictError)
