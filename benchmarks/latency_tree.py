"""Does a tree model earn its place beside the additive latency model? (issue 12 asks to show it)

Fits the additive model (``cnndeploy model fit``'s) to the fitting records, then a gradient-
boosted tree (scikit-learn, not a dependency of cnn_deploy: ``pip install scikit-learn``) on
the additive model's leave-one-network-out log residuals of the fitting cells, with the net's
fields, log batch, log weight bytes and the additive prediction as features; scores the
additive model alone and additive x tree correction on each held-out file.

    python benchmarks/latency_tree.py --fit fit.jsonl cov.jsonl --held held_s1.jsonl held_s2.jsonl
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np


def features(p: Any, predicted: float) -> list[float]:
    from cnn_deploy.study import perfmodel as pm

    s = p.spec
    return [math.log(p.batch), s.conv_layers, s.fc_layers, s.depth, math.log(s.neurons),
            s.kernel, s.padding, math.log(pm.additive_features(s, p.batch)[2]),
            math.log(predicted)]


def shares(errors: list[float]) -> str:
    a = np.abs(np.array(errors))
    return f"within ±10 % {np.mean(a <= .1):.0%}, ±20 % {np.mean(a <= .2):.0%}, median {np.median(a):.1%}"


def main() -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    from cnn_deploy.results.tidy import load, tidy
    from cnn_deploy.study import perfmodel as pm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=Path, nargs="+", required=True)
    parser.add_argument("--held", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    rows = tidy(load(args.fit)[0])
    source = pm.choose_source(rows)
    pts, cache = pm.points(rows, source), pm.cache_size(rows, source)
    model = pm.fit(pts, source, cache_mb=cache, block=pm.channel_block(rows, source))
    block = model.block
    x, y = [], []
    for net in {p.spec for p in pts}:  # leave-one-net-out residuals: what the tree can learn
        coef = pm._fit_form("additive", [p for p in pts if p.spec != net], cache, (), block)
        for p in (p for p in pts if p.spec == net):
            predicted = pm._predict_point("additive", coef, p, cache, block)
            x.append(features(p, predicted))
            y.append(math.log(p.tiles_per_ms / predicted))
    tree = GradientBoostingRegressor(max_depth=3, n_estimators=200, learning_rate=0.05,
                                     subsample=0.8, random_state=0).fit(x, y)
    for held in args.held:
        base, corrected = [], []
        for p in pm.points(tidy(load([held])[0]), source):
            predicted = model.predict(p.spec, p.batch).tiles_per_ms
            fixed = predicted * math.exp(float(tree.predict([features(p, predicted)])[0]))
            base.append(predicted / p.tiles_per_ms - 1)
            corrected.append(fixed / p.tiles_per_ms - 1)
        print(f"{held}: additive {shares(base)} | additive x tree {shares(corrected)}")


if __name__ == "__main__":
    main()
