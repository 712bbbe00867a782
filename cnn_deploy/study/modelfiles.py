"""Latency models to and from files: fit or adapt from result files, save, load."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnn_deploy.errors import PredictError
from cnn_deploy.results.tidy import Rows, tidy
from cnn_deploy.results.tidy import load as load_records
from cnn_deploy.study.perfmodel import (
    MAX_ADAPT_POINTS,
    LatencyModel,
    Source,
    adapt,
    cache_size,
    channel_block,
    choose_source,
    fit,
    part_points,
    points,
    sources,
    thin,
)

HELD_OUT = "heldout"  # the sweep group `model validate` records its cells under: never fitted


def default_path(device: str) -> Path:
    """Where `model fit` writes, and predict and select look, for this device's model (the
    slug comes from records, which may be hand-edited: only [A-Za-z0-9._-], no '..')."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", device).replace("..", "-").strip("-.") or "device"
    return Path("models") / f"latency_{safe[:100]}.json"


def save(model: LatencyModel, path: Path) -> Path:
    from cnn_deploy.files import check_output, write_atomic

    check_output(path, ".json", "the latency model", PredictError)
    problem = model.problem()
    if problem:  # never write a file `load` would call damaged
        raise PredictError(f"the model for {path} is not usable ({problem}): check the records "
                           "it was fitted on")
    try:
        text = json.dumps(model.to_dict(), indent=1, allow_nan=False)
    except ValueError:
        raise PredictError(f"the model for {path} holds a figure that is not a number (NaN or "
                           "infinite): check the records it was fitted on") from None
    return write_atomic(path, text + "\n", "the latency model", PredictError)


def load(path: Path) -> LatencyModel:
    if path.is_dir():
        raise PredictError(f"{path} is a folder: give the latency model's .json file")
    if not path.is_file():
        raise PredictError(f"no latency model at {path}: fit one with `cnndeploy model fit "
                           f"results/sweep.jsonl -o {path}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PredictError(f"{path} is not a readable latency model ({type(exc).__name__}): fit "
                           "it again with `cnndeploy model fit`") from None
    return LatencyModel.from_dict(data, str(path))


def fittable(rows: Rows) -> Rows:
    """Rows a model may be fitted on: everything but `model validate`'s held-out cells."""
    return [r for r in rows if r.get("sweep_group") != HELD_OUT]


def setting(rows: Rows, source: Source) -> tuple[dict[str, str], dict[str, Any]]:
    """The backend package version and options the rows of ``source`` ran with."""
    for r in sources(rows).get(source, []):
        options = {k: v for k, v in (r.get("backend_options") or {}).items()
                   if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
        version = r.get("backend_version")
        return ({source.backend_name: str(version)} if version else {}), options
    return {}, {}


def fit_files(paths: Sequence[Path], backend: str | None = None, device: str | None = None,
              cache_mb: float | None = None, profiles: bool = True, block: int | None = None
              ) -> tuple[LatencyModel, list[str]]:
    """A model fitted to the bench records of ``paths`` (one source; see choose_source; held-out
    cells left out), with its profile records' per-part rows (``profiles``), and the damaged
    lines skipped. ``cache_mb``: the device's last-level cache where the records do not say
    (records from before it was recorded); ``block``: the channel block, where not the CPU's
    vector lanes the records name (None, and none named: the fit chooses)."""
    records, skipped = load_records(paths)
    rows = fittable(tidy(records))
    model, notes = fit_source(rows, choose_source(rows, backend, device), cache_mb, profiles,
                              block)
    return model, [*skipped, *notes]


def fit_source(rows: Rows, source: Source, cache_mb: float | None = None, profiles: bool = True,
               block: int | None = None) -> tuple[LatencyModel, list[str]]:
    """A model of ``source`` from ``rows`` (fittable ones): the cache and channel block its
    records name (else ``cache_mb``, ``block``), its profile records' parts, its setting; and
    a note where profile records were of no use."""
    versions, options = setting(rows, source)
    cache = cache_size(rows, source) or cache_mb
    parts = part_points(rows, source) if profiles else []
    profiled = {(r.get("run_id"), r.get("net"), r.get("batch")) for r in rows
                if r.get("kind") == "profile"}
    notes = [] if not profiles or not profiled or parts else [
        f"{len(profiled)} profile records: none is of {source.describe()} with every layer "
        "mapped (profile with the sweep's backend settings, e.g. the same tuning)"]
    block = block if block is not None else channel_block(rows, source)
    return fit(points(rows, source), source, versions, options, cache, parts, block), notes


def adapt_files(model: LatencyModel, paths: Sequence[Path], backend: str | None = None,
                device: str | None = None, n: int = MAX_ADAPT_POINTS
                ) -> tuple[LatencyModel, list[str], list[str]]:
    """``model`` carried to the source of ``paths`` from at most ``n`` of its cells, the damaged
    lines skipped, and notes (the new device pads channels otherwise)."""
    if not 2 <= n <= MAX_ADAPT_POINTS:
        raise PredictError(f"--points must be within 2..{MAX_ADAPT_POINTS}, got {n}")
    records, skipped = load_records(paths)
    rows = fittable(tidy(records))
    source = choose_source(rows, backend, device)
    if source == model.source:
        raise PredictError(f"the records are of {source.describe()}, which the model was fitted "
                           "on: adapting is for another device or backend setting")
    versions, options = setting(rows, source)
    lanes = channel_block(rows, source)
    notes = [f"the records' device has {lanes} vector lanes, the model pads channels to "
             f"{model.block}: fit a model there with `cnndeploy model fit` if the adapted "
             "figures look off"] if lanes and lanes != model.block else []
    return adapt(model, thin(points(rows, source), n), source, versions, options,
                 cache_size(rows, source)), skipped, notes
