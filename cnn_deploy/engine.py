"""ONNX -> TensorRT plan for this GPU, its JSON sidecar, and the compatibility check on load.

TensorRT 10.x keeps weak typing (``BuilderFlag.FP16`` on an fp32 graph); 11.x builds strongly
typed networks only, so fp16 comes from the graph of ``cnndeploy export --fp16``. The code asks
the module what it has (``hasattr``), never parses versions; tensorrt, torch and cuda-python are
imported only inside the functions that use them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from cnn_deploy import __version__
from cnn_deploy.device import gpu_slug
from cnn_deploy.errors import BackendError, EngineError
from cnn_deploy.files import file_sha256, write_atomic

PRECISIONS = ("fp32", "fp16")
MIN_PLAN_BYTES = 256  # anything shorter cannot be a serialised engine

# Every TensorRT name this module touches: ``trt.<name>`` or a method/property of a Builder,
# IBuilderConfig, INetworkDefinition, OnnxParser, IOptimizationProfile, ITensor, ITimingCache or
# ParserError. Each was confirmed in the bindings' sources (NVIDIA/TensorRT python/src/infer/
# pyCore.cpp, pyGraph.cpp, python/src/parsers/pyOnnx.cpp at tags v10.0.0, v10.9.0 and v11.1) and
# the Python API docs (docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/
# {Builder,BuilderConfig,Logger,OptimizationProfile,TimingCache}.html, parsers/Onnx/pyOnnx.html;
# api/migration/tensorrt-10x-to-11x-python-api-reference.html for what 11.x removed).
# tests/test_engine.py fails on a name used here but not listed, or listed but not used.
BUILDER_API = (
    "__version__", "ILogger", "ILogger.__init__",  # Logger.html: subclass, init base, log()
    "ILogger.Severity.INTERNAL_ERROR", "ILogger.Severity.ERROR", "ILogger.Severity.WARNING",
    "Builder", "OnnxParser",  # both absent from tensorrt_lean (runtime only)
    "Builder.create_network", "Builder.create_builder_config",  # create_network(flags=0)
    "Builder.create_optimization_profile", "Builder.build_serialized_network",  # None: failed
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",  # 10.x opt-in; 11.x deprecated, ignored
    "BuilderFlag.FP16",  # 10.x only: removed in 11.0 (migration guide; pyCore.cpp at v11.1)
    "BuilderFlag.VERSION_COMPATIBLE", "MemoryPoolType.WORKSPACE",  # 10.x and 11.x
    "BuilderFlag.TF32", "IBuilderConfig.clear_flag",  # 10.x and 11.x; TF32 on by default
    "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.builder_optimization_level",  # 0..5
    "IBuilderConfig.set_flag", "IBuilderConfig.add_optimization_profile",  # -> index, -1: invalid
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache",  # -> bool
    "IBuilderConfig.get_timing_cache", "ITimingCache.serialize", "IOptimizationProfile.set_shape",
    "INetworkDefinition.num_inputs", "INetworkDefinition.get_input", "ITensor.name", "ITensor.shape",
    "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error", "ParserError.code",
    "ParserError.desc", "ParserError.node", "ParserError.node_name", "ParserError.node_operator",
    # BuilderConfig.html: profiling_verbosity; ProfilingVerbosity.html (Core/EngineInspector.html:
    # DETAILED makes the inspector report each layer's type and the ONNX nodes fused into it)
    "ProfilingVerbosity", "ProfilingVerbosity.DETAILED", "IBuilderConfig.profiling_verbosity",
)


@dataclass(frozen=True)
class Sidecar:
    """What built a plan; stored as ``<plan>.json``."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    source_onnx: str
    source_sha256: str
    input_name: str = "tiles"
    plan_bytes: int | None = None
    build_seconds: float | None = None
    opt_level: int | None = None
    workspace_mib: int | None = None
    timing_cache: str | None = None
    version_compatible: bool = False
    strongly_typed: bool = False
    tf32: bool | None = None  # None: a sidecar from before the flag was recorded (TF32 was on)
    built_at: str = ""
    built_by: str = f"cnn_deploy {__version__}"
    builder_warnings: tuple[str, ...] = ()
    schema: int = 1  # version of this file format


def write_sidecar(plan: Path, sidecar: Sidecar) -> Path:
    path = plan.with_suffix(".json")
    write_atomic(path, json.dumps(asdict(sidecar), indent=2) + "\n", "the engine sidecar", EngineError)
    return path


def read_sidecar(plan: Path) -> Sidecar | None:
    """The sidecar beside ``plan``; None when there is none; EngineError when it is corrupt."""
    path = plan.with_suffix(".json")
    if not path.is_file():
        return None
    try:
        values = {k: v for k, v in json.loads(path.read_text()).items()
                  if k in {f.name for f in fields(Sidecar)}}
        major, minor = (int(v) for v in values["compute_capability"])
        return Sidecar(**{**values, "compute_capability": (major, minor),
                          "builder_warnings": tuple(values.get("builder_warnings", ()))})
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise EngineError(f"{path} is not a readable engine sidecar ({exc.__class__.__name__}: "
                          f"{str(exc)[:200]}): delete it and rebuild with `cnndeploy build`") from None


class NoBuilderError(EngineError):
    """No TensorRT builder or no GPU here: the message says which is missing."""


def engine_path(onnx: Path, precision: str, device_slug: str, root: Path = Path("engines")) -> Path:
    """models/lenet_3c1f_fp16.onnx, 'fp16' -> engines/<slug>/lenet_3c1f_fp16.plan."""
    _check_precision(precision)
    return root / device_slug / f"{onnx.stem.removesuffix('_fp16').removesuffix('_fp32')}_{precision}.plan"


def rebuild_command(sidecar: Sidecar) -> str:
    """The exact `cnndeploy build` command that made this plan."""
    args = ["cnndeploy", "build", sidecar.source_onnx, "--precision", sidecar.precision,
            "--min-batch", str(sidecar.min_batch), "--opt-batch", str(sidecar.opt_batch),
            "--max-batch", str(sidecar.max_batch)]
    extra = {"--opt-level": sidecar.opt_level, "--workspace": sidecar.workspace_mib,
             "--timing-cache": sidecar.timing_cache}
    args += [s for flag, value in extra.items() if value is not None for s in (flag, str(value))]
    return shlex.join(args + ["--version-compatible"] * sidecar.version_compatible
                      + ["--tf32"] * bool(sidecar.tf32))


def check_compatible(plan: Path, trt_version: str, gpu_name: str,
                     compute_capability: tuple[int, int]) -> list[str]:
    """Notes for the user when the plan can be loaded here; EngineError when it cannot."""
    if not plan.is_file():
        raise EngineError(f"no engine at {plan}: build one with `cnndeploy build <model>.onnx`")
    size, sidecar = plan.stat().st_size, read_sidecar(plan)
    rebuild = f"`{rebuild_command(sidecar)}`" if sidecar else "`cnndeploy build <model>.onnx`"
    if size < MIN_PLAN_BYTES or (sidecar and sidecar.plan_bytes not in (None, size)):
        said = f", its sidecar says {sidecar.plan_bytes}" if sidecar and sidecar.plan_bytes else ""
        raise EngineError(f"{plan} is truncated or damaged ({size} bytes{said}): rebuild it with {rebuild}")
    if sidecar is None:
        return [f"{plan} has no sidecar {plan.with_suffix('.json').name}: cannot check that it was built "
                f"for {gpu_name} and TensorRT {trt_version}; if it fails to load, rebuild it with {rebuild}"]
    cc, built_cc = (int(compute_capability[0]), int(compute_capability[1])), sidecar.compute_capability
    problems = ["GPU"] * (sidecar.gpu_name != gpu_name) + ["compute capability"] * (built_cc != cc)
    notes: list[str] = []
    if not _versions_compatible(sidecar.tensorrt_version, trt_version, sidecar.version_compatible):
        problems.append("TensorRT version")
    elif not _versions_compatible(sidecar.tensorrt_version, trt_version, False):  # relaxed by the flag
        notes.append(f"{plan} was built version-compatible with TensorRT {sidecar.tensorrt_version}; "
                     f"loading it with {trt_version} needs the runtime to allow engine host code")
    if problems:
        raise EngineError(
            f"{plan} was built for {sidecar.gpu_name} (sm_{built_cc[0]}{built_cc[1]}) with TensorRT "
            f"{sidecar.tensorrt_version}; this is {gpu_name} (sm_{cc[0]}{cc[1]}) with TensorRT {trt_version} "
            f"({', '.join(problems)} differ{'s' if len(problems) == 1 else ''}): rebuild it here with "
            f"{rebuild}")
    return notes


def _versions_compatible(built: str, runtime: str, version_compatible: bool) -> bool:
    """Same major.minor.patch, unless built version-compatible: then a later runtime of the same
    major, or an 11.x runtime for a 10.x plan (TensorRT's engine-compatibility docs)."""
    b, r = ((*(int(p) for p in re.findall(r"\d+", v)[:3]), 0, 0, 0)[:3] for v in (built, runtime))
    return r == b or (version_compatible and r >= b and (r[0] == b[0] or (b[0], r[0]) == (10, 11)))


DEFAULT_OPT_LEVEL = 3  # IBuilderConfig.builder_optimization_level's default


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp32"
    min_batch: int = 1
    opt_batch: int = 256
    max_batch: int = 4096
    timing_cache: Path | None = None
    opt_level: int | None = None  # TensorRT's builder_optimization_level 0..5 (default 3)
    workspace_mib: int | None = None
    version_compatible: bool = False
    tf32: bool = False  # fp32 layers may use TF32 tensor cores (TensorRT's default is on)

    def __post_init__(self) -> None:
        _check_precision(self.precision)
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise EngineError(f"invalid batch profile min {self.min_batch}, opt {self.opt_batch}, "
                              f"max {self.max_batch}: the rule is 1 <= min <= opt <= max")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise EngineError(f"--opt-level must be 0..5 (TensorRT's default is 3), got {self.opt_level}")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise EngineError(f"--workspace (MiB) must be positive, got {self.workspace_mib}")


class PrecisionPlan(NamedTuple):
    strongly_typed: bool
    fp16_flag: bool  # set BuilderFlag.FP16 (10.x weak typing)
    network_flags: int


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """STRONGLY_TYPED on 10.x when asked; 0 on 11.x (always strongly typed, the flag deprecated).
    Never EXPLICIT_BATCH: 10.x ignores it and 11.x removed it."""
    if strongly_typed and hasattr(trt.BuilderFlag, "FP16") and hasattr(
            trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def precision_plan(trt: Any, precision: str, onnx_is_fp16: bool, onnx: Path | None = None) -> PrecisionPlan:
    """How this TensorRT gets ``precision`` (fp32 or fp16) from this graph, or why it cannot."""
    weak_typing, name = hasattr(trt.BuilderFlag, "FP16"), str(onnx or "this ONNX file")
    if onnx_is_fp16 and precision == "fp32":
        raise EngineError(f"{name} is an fp16 graph: build it with --precision fp16, or build the "
                          "fp32 ONNX file for an fp32 engine")
    if precision == "fp16" and not onnx_is_fp16 and not weak_typing:
        fp16 = onnx.with_name(onnx.stem + "_fp16.onnx") if onnx else "<net>_fp16.onnx"
        raise EngineError(f"{name} is an fp32 graph and this TensorRT builds strongly typed networks "
                          f"only (no BuilderFlag.FP16): run `cnndeploy export --fp16 <checkpoint>` and "
                          f"build {fp16}")
    strongly_typed = onnx_is_fp16 or not weak_typing
    return PrecisionPlan(strongly_typed, precision == "fp16" and not strongly_typed,
                         network_flags(trt, strongly_typed))


def has_fast_fp16(cc: tuple[int, int]) -> bool:
    """Full-rate fp16 per CUDA's throughput table (sm_61: 1/64 rate, sm_50/52: none). TensorRT's
    ``platform_has_fast_fp16`` is deprecated since 10.5 ("query ... from CUDA") and gone in 11."""
    return tuple(cc) in ((5, 3), (6, 0), (6, 2)) or tuple(cc) >= (7, 0)


def profile_shapes(name: str, dims: tuple[int, ...], options: BuildOptions) -> list[tuple[int, ...]]:
    """[min, opt, max] shapes of an input whose first axis is the dynamic batch."""
    if not dims or dims[0] != -1 or any(d < 0 for d in dims[1:]):
        raise EngineError(f"input '{name}' has shape {dims}: a batch profile needs a dynamic first "
                          "(batch) axis and fixed others; re-export the model with `cnndeploy export`")
    return [(b, *dims[1:]) for b in (options.min_batch, options.opt_batch, options.max_batch)]


def parser_errors(parser: Any) -> list[str]:
    """One line per error recorded by TensorRT's ONNX parser."""
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = f"node {error.node()}"
        if hasattr(error, "node_name") and error.node_name():
            where += f" '{error.node_name()}' ({error.node_operator()})"
        lines.append(f"{where}: {error.desc()} [{getattr(error.code(), 'name', error.code())}]")
    return lines


def build_engine(onnx: Path, options: BuildOptions, out: Path | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[Path, Sidecar]:
    """Build a plan for this GPU; write it atomically, then its sidecar and timing cache."""
    say = progress or (lambda _message: None)
    onnx_fp16 = onnx_precision(onnx) == "fp16"
    trt, (gpu_name, cc) = _builder_and_gpu()
    plan_of = precision_plan(trt, options.precision, onnx_fp16, onnx)
    if options.precision == "fp16" and not has_fast_fp16(cc):
        raise EngineError(f"{gpu_name} (sm_{cc[0]}{cc[1]}) has no fast fp16 arithmetic: use --precision fp32")
    out = out or engine_path(onnx, options.precision, gpu_slug(gpu_name, cc))
    logger = capturing_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(plan_of.network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        lines = parser_errors(parser) or logger.errors or ["no error recorded"]
        raise EngineError(f"TensorRT's ONNX parser rejected {onnx} ({len(lines)} errors): "
                          + "; ".join(lines))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for tensor in inputs:
        profile.set_shape(tensor.name, *profile_shapes(tensor.name, tuple(tensor.shape), options))
    if config.add_optimization_profile(profile) < 0:
        raise EngineError(f"TensorRT rejected the batch profile {options.min_batch}/{options.opt_batch}/"
                          f"{options.max_batch}: {'; '.join(logger.errors[-3:])}")
    if plan_of.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    # TF32 is on by default (NvInfer.h: BuilderFlag::kTF32 "enabled by default"), so an "fp32"
    # engine would run its fp32 layers on TF32 tensor cores (10-bit mantissa) on Ampere and
    # newer: fp32 means TF32 off unless --tf32 asks for it.
    if not options.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    if hasattr(trt, "ProfilingVerbosity"):  # in every supported release; absent from test doubles
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer info for `profile`
    if options.timing_cache is not None:
        cached = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(cached)
        if cache is None or not config.set_timing_cache(cache, False):
            raise EngineError(f"timing cache {options.timing_cache} is corrupt or from another TensorRT "
                              "or GPU: delete it or pass another --timing-cache")
    say(f"building {out.name} with TensorRT {trt.__version__} on {gpu_name}")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineError(f"TensorRT could not build {onnx}: "
                          + ("; ".join(logger.errors[-5:]) or "it logged no error"))
    write_atomic(out, bytes(serialized), "the engine", EngineError)
    if options.timing_cache is not None:
        write_atomic(options.timing_cache, bytes(config.get_timing_cache().serialize()),
                     "the timing cache", EngineError)
    sidecar = Sidecar(
        tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=cc,
        precision=options.precision, min_batch=options.min_batch, opt_batch=options.opt_batch,
        max_batch=options.max_batch, source_onnx=str(onnx), source_sha256=file_sha256(onnx),
        input_name=",".join(t.name for t in inputs), plan_bytes=out.stat().st_size,
        build_seconds=seconds, opt_level=options.opt_level, workspace_mib=options.workspace_mib,
        timing_cache=None if options.timing_cache is None else str(options.timing_cache),
        version_compatible=options.version_compatible, strongly_typed=plan_of.strongly_typed,
        tf32=options.tf32,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        builder_warnings=tuple(logger.warnings))
    write_sidecar(out, sidecar)
    return out, sidecar


def onnx_precision(onnx: Path) -> str:
    """'fp16' or 'fp32': the export metadata, else whether any weight is float16."""
    from cnn_deploy.onnxfile import load_onnx

    proto = load_onnx(onnx, load_weights=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("cnn_deploy.precision") in PRECISIONS:
        return meta["cnn_deploy.precision"]
    return "fp16" if any(t.data_type == 10 for t in proto.graph.initializer) else "fp32"  # FLOAT16


def _builder_and_gpu() -> tuple[Any, tuple[str, tuple[int, int]]]:
    """The tensorrt module and (GPU name, compute capability), or one line on what is missing."""
    missing, trt = [], None
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or PyPI's placeholder package raising on import
        why = ("only the runtime-only tensorrt-lean is installed" if importlib.util.find_spec(
            "tensorrt_lean") else f"`import tensorrt` fails with {exc.__class__.__name__}")
        missing.append(f"no TensorRT builder ({why}: pip install tensorrt)")
    if trt is not None and not hasattr(trt, "Builder"):
        missing.append("no TensorRT builder (this tensorrt package is runtime-only)")
    gpu, reasons = _gpu_identity()
    if gpu is None:
        missing.append(f"no NVIDIA GPU visible ({'; '.join(reasons)})")
    if missing or gpu is None:
        raise NoBuilderError(f"cannot build a TensorRT engine here: {' and '.join(missing)}")
    return trt, gpu


def _gpu_identity() -> tuple[tuple[str, tuple[int, int]] | None, list[str]]:
    """(name, compute capability) of GPU 0 from torch.cuda or else cuda-python, or why none."""
    reasons = []
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return (str(torch.cuda.get_device_name(0)), (int(major), int(minor))), []
        reasons.append(f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
                       else "torch sees no CUDA device")
    from cnn_deploy import cuda

    try:
        if cuda.device_count() > 0:
            props = cuda.device_properties(0)
            return (props.name, props.compute_capability), []
    except BackendError as exc:  # cuda-python missing, or a driver error
        return None, [*reasons, str(exc)]
    return None, [*reasons, "cuda-python sees no device"]


def capturing_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps warnings and errors and never prints: TensorRT's default
    ``trt.Logger`` writes ``[TRT] [W] ...`` lines to ``std::cout`` (pyCore.cpp), which would land
    in a command's --json output. The builder and the runtime both log through one of these."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors, self.warnings = list[str](), list[str]()

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(msg)

    return CapturingLogger()


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise EngineError(f"--precision must be fp32 or fp16, got '{precision}'")


def engine_for_spec(spec_name: str, precision: str, max_batch: int, *, root: Path = Path("engines"),
                    models: Path = Path("models"), progress: Callable[[str], None] | None = None
                    ) -> tuple[Path, bool]:
    """The engine of an untrained network for this GPU (a sweep or profile family on TensorRT):
    ``(plan, built)``. Reused when ``engines/<gpu>/<net>_<precision>.plan`` has a sidecar from
    this TensorRT and GPU, built from the same ONNX file with a profile up to ``max_batch``;
    built otherwise (exporting ``models/<net>.onnx``, or its fp16 twin, first), with one
    timing cache per GPU folder shared by every build, so a rerun builds nothing."""
    from cnn_deploy.arch import NetSpec
    from cnn_deploy.export import export_spec

    _check_precision(precision)
    spec = NetSpec.from_name(spec_name)
    trt, (gpu_name, cc) = _builder_and_gpu()
    folder = root / gpu_slug(gpu_name, cc)
    onnx = models / (f"{spec.name}_fp16.onnx" if precision == "fp16" else f"{spec.name}.onnx")
    if not onnx.is_file():
        import shutil

        from cnn_deploy.files import temp_folder

        # in a folder of its own: an fp16 export also writes the fp32 file, which must not
        # replace a (trained) models/<net>.onnx already there
        with temp_folder("export-") as tmp:
            exported = export_spec(spec, Path(tmp) / f"{spec.name}.onnx", fp16=precision == "fp16")
            made = exported.fp16_path if precision == "fp16" and exported.fp16_path else exported.path
            onnx.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(made), onnx)
    plan = engine_path(onnx, precision, folder.name, root)
    if _reusable(plan, str(trt.__version__), gpu_name, cc, onnx, max_batch):
        return plan, False  # whatever its level: `build --opt-level` (or tuned) made it so
    options = BuildOptions(precision=precision, min_batch=1, opt_batch=max_batch,
                           max_batch=max_batch, timing_cache=folder / "timing.cache")
    return build_engine(onnx, options, plan, progress)[0], True


def _reusable(plan: Path, trt_version: str, gpu_name: str, cc: tuple[int, int], onnx: Path,
              max_batch: int, opt_level: int | None = None) -> bool:
    """Whether ``plan`` serves as a build here would: this TensorRT and GPU, the same ONNX
    file, a profile from 1 up to at least ``max_batch``, true fp32; with ``opt_level``, built
    at that level (unset is TensorRT's 3) with its profile optimised for ``max_batch``."""
    sidecar = read_sidecar(plan) if plan.is_file() else None
    return (sidecar is not None and sidecar.tensorrt_version == trt_version
            and sidecar.gpu_name == gpu_name and tuple(sidecar.compute_capability) == tuple(cc)
            and sidecar.source_sha256 == file_sha256(onnx) and sidecar.max_batch >= max_batch
            and sidecar.min_batch == 1 and sidecar.tf32 is False  # fp32 means TF32 off
            and not sidecar.version_compatible
            and (opt_level is None or ((sidecar.opt_level if sidecar.opt_level is not None
                                        else DEFAULT_OPT_LEVEL) == opt_level
                                       and sidecar.opt_batch == sidecar.max_batch == max_batch)))


def engines_for_levels(onnx: Path, precision: str, max_batch: int, levels: Sequence[int], *,
                       root: Path = Path("engines"),
                       progress: Callable[[str], None] | None = None) -> list[tuple[int, Path]]:
    """One engine of ``onnx`` per builder optimisation level, for `cnndeploy tune` to time:
    ``engines/<gpu>/tune/<stem>_<precision>_O<level>.plan``, profile 1..``max_batch`` (opt at
    the top), each built without a timing cache (a cache hit reuses the tactic another level
    chose, and the levels would not be compared); an engine a rerun would build again is
    reused."""
    _check_precision(precision)
    trt, (gpu_name, cc) = _builder_and_gpu()
    folder = root / gpu_slug(gpu_name, cc)
    out = []
    for level in levels:
        plan = folder / "tune" / f"{onnx.stem}_{precision}_O{level}.plan"
        if not _reusable(plan, str(trt.__version__), gpu_name, cc, onnx, max_batch, level):
            plan.parent.mkdir(parents=True, exist_ok=True)
            options = BuildOptions(precision=precision, min_batch=1, opt_batch=max_batch,
                                   max_batch=max_batch, opt_level=level)
            build_engine(onnx, options, plan, progress)
        out.append((level, plan))
    return out
