"""`cnndeploy build`: ONNX -> TensorRT plan for this GPU, with a JSON sidecar beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnn_deploy.cli import render


def build(
    onnx: Annotated[Path, typer.Argument(help="An ONNX file from `cnndeploy export` (for fp16 on "
                                         "TensorRT 11, the <net>_fp16.onnx of `export --fp16`).")],
    precision: Annotated[str, typer.Option(help="fp32 or fp16.")] = "fp32",
    min_batch: Annotated[int, typer.Option(help="Smallest batch the engine accepts.")] = 1,
    opt_batch: Annotated[int, typer.Option(help="Batch TensorRT tunes kernels for.")] = 256,
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine accepts.")] = 4096,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache file: read if present, "
                                                      "written back after the build.")] = None,
    opt_level: Annotated[int | None, typer.Option(help="Builder optimisation level 0-5 "
                                                  "(TensorRT's default: 3).")] = None,
    workspace: Annotated[int | None, typer.Option(help="Workspace memory limit in MiB.")] = None,
    tf32: Annotated[bool, typer.Option(help="Let fp32 layers use TF32 tensor cores (faster on "
                                       "Ampere and newer, 10-bit mantissa; off: true fp32).")]
        = False,
    version_compatible: Annotated[bool, typer.Option(help="Build an engine that later TensorRT "
                                                     "versions can load (slower).")] = False,
    out: Annotated[Path | None, typer.Option(help="Plan path (default: engines/<gpu-slug>/"
                                             "<net>_<precision>.plan).")] = None,
    tune: Annotated[bool, typer.Option(help="Use the optimisation level `cnndeploy tune` kept "
                                       "for this device when --opt-level is not given.")] = True,
) -> None:
    """Build a TensorRT engine for this GPU from an ONNX file."""
    from cnn_deploy.engine import BuildOptions
    from cnn_deploy.jobs import build as build_engine
    from cnn_deploy.jobs import tuned_build_options

    if opt_level is None:
        tuned, note = tuned_build_options("tensorrt", tune)
        opt_level = tuned.get("opt_level")
        if note:
            render.note(note)

    options = BuildOptions(precision=precision, min_batch=min_batch, opt_batch=opt_batch,
                           max_batch=max_batch, timing_cache=timing_cache, opt_level=opt_level,
                           workspace_mib=workspace, version_compatible=version_compatible,
                           tf32=tf32)
    with render.err.status(f"building {onnx}...") as status:
        plan, sidecar = build_engine(onnx, options, out, progress=status.update)
    render.out.print(f"wrote {plan} ({sidecar.plan_bytes} bytes) and {plan.with_suffix('.json').name}",
                     highlight=False, soft_wrap=True)
    render.out.print(
        f"{sidecar.precision} engine for {sidecar.gpu_name} (sm_{sidecar.compute_capability[0]}"
        f"{sidecar.compute_capability[1]}), TensorRT {sidecar.tensorrt_version}, batch "
        f"{sidecar.min_batch}/{sidecar.opt_batch}/{sidecar.max_batch} (min/opt/max), built in "
        f"{sidecar.build_seconds:.1f} s", highlight=False, soft_wrap=True)
    for warning in sidecar.builder_warnings:
        render.note(f"TensorRT: {warning}")


def register(app: typer.Typer) -> None:
    app.command()(build)
