"""The one backend registry: which backends exist, which are usable here and why not, their
options, and their runners. Nothing outside this module names a backend.

A backend is one module holding one :class:`~cnn_deploy.backends.base.Backend` called
``BACKEND``, plus one line in :data:`MODULES`. The modules are light at import (their heavy
packages are imported inside the runner), so listing them costs nothing.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Iterable
from typing import Any

from cnn_deploy.backends.base import Availability, Backend, Runner, Target
from cnn_deploy.errors import BackendError

# One entry per backend, in the order tables list them.
MODULES = (
    "cnn_deploy.backends.torch",
    "cnn_deploy.backends.ort",
    "cnn_deploy.backends.openvino",
    "cnn_deploy.backends.tensorrt",
)


@functools.cache
def backends() -> tuple[Backend, ...]:
    return tuple(importlib.import_module(m).BACKEND for m in MODULES)


def names() -> tuple[str, ...]:
    return tuple(b.name for b in backends())


def get(name: str) -> Backend:
    """A backend by name or alias; an unknown name raises with a did-you-mean."""
    wanted = name.strip().lower()
    for b in backends():
        if wanted == b.name or wanted in b.aliases:
            return b
    known = [n for b in backends() for n in (b.name, *b.aliases)]
    close = difflib.get_close_matches(wanted, known, n=1)
    hint = f" Did you mean '{get(close[0]).name}'?" if close else ""
    raise BackendError(f"unknown backend '{name.strip()}': choose from {', '.join(names())}."
                       f"{hint} (`cnndeploy backends` lists what is usable here)")


def parse_backends(text: str | Iterable[str]) -> list[str]:
    """'onnxruntime,torch' (or a list) -> canonical names, each once, in the order given."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in filter(None, (t.strip() for t in items)):
        name = get(raw).name
        if name not in out:
            out.append(name)
    if not out:
        raise BackendError(f"no backend given: choose from {', '.join(names())}")
    return out


def parse_options(items: Iterable[str] | None) -> dict[str, dict[str, Any]]:
    """['torch.memory_format=contiguous', 'onnxruntime.threads=1'] -> {backend: {key: value}},
    every key and value checked against the backend's option schema before any work starts."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        backend, dot, name = key.partition(".")
        if not sep or not dot or not name.strip():
            raise BackendError(f"--option takes BACKEND.KEY=VALUE (e.g. onnxruntime.opt_level=all), "
                               f"got '{item}'")
        entry = get(backend)
        out.setdefault(entry.name, {})[name.strip()] = entry.option(name.strip()).parse(
            entry.name, value.strip())
    return out


def check_options(options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Options given in code ({backend: {key: value}}) checked as the command line's are."""
    return {get(b).name: {k: get(b).option(k).parse(get(b).name, v) for k, v in opts.items()}
            for b, opts in options.items()}


def probe_all() -> list[Availability]:
    """Every backend on every device it knows, usable here or why not."""
    return [a for b in backends() for a in probed(b)]


@functools.cache
def probed(entry: Backend) -> tuple[Availability, ...]:
    """``entry.probe()`` once per process: probes start sessions and load plugins."""
    return tuple(entry.probe())


def availability(entry: Backend, options: dict[str, Any]) -> Availability | None:
    """The probe row a runner of ``entry`` with ``options`` needs (its device or provider)."""
    wanted = entry.probe_target(options)
    rows = probed(entry)
    return next((a for a in rows if a.target == wanted), rows[0] if rows and not wanted else None)


def first_loading(needs: str) -> Backend:
    """The first listed backend that loads ``needs`` (``onnx``, ``spec`` or ``engine``)."""
    return next(b for b in backends() if b.needs == needs)


def gpu_usable() -> list[Availability]:
    return [a for a in probe_all() if a.usable and a.gpu]


def defaults() -> list[str]:
    """The backends a table shows when no --backend is given."""
    return [b.name for b in sorted(backends(), key=lambda b: b.default) if b.default > 0]


def packages() -> tuple[str, ...]:
    """Every backend's distributions, for the versions a record carries."""
    return tuple(dict.fromkeys(p for b in backends() for p in b.packages))


def baseline_backend() -> Backend:
    """The backend whose default-free settings are the baseline row of every table."""
    return next(b for b in backends() if b.baseline is not None)


def runner(name: str, target: Target, options: dict[str, Any] | None = None) -> Runner:
    """An inactive runner of backend ``name`` for ``target``, its options validated."""
    entry = get(name)
    why = entry.missing(target)
    if why is not None:
        raise BackendError(why)
    return entry.runner(target, entry.resolve(options or {}))
