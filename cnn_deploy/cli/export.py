"""`cnndeploy export`: checkpoint -> checked ONNX file with metadata and a parity report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnn_deploy.cli import render


def export(
    checkpoint: Annotated[Path | None, typer.Argument(help="A checkpoint from `cnndeploy "
                                                      "train`.")] = None,
    spec: Annotated[str | None, typer.Option(help="Export an untrained network by name instead "
                                             "(e.g. lenet_5c1f; speed does not depend on the "
                                             "weights), to models/<name>.onnx.")] = None,
    out: Annotated[Path | None, typer.Option(help="ONNX path (default: beside the "
                                             "checkpoint).")] = None,
    fp16: Annotated[bool, typer.Option(help="Also write <name>_fp16.onnx (fp16 inside, fp32 "
                                       "at the boundary) for TensorRT.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset; checked after export.")] = 18,
    parity_tiles: Annotated[int, typer.Option(help="Real test digits for the parity "
                                              "check (0 skips it).")] = 2000,
    data: Annotated[str | None, typer.Option(help="MNIST folder for the parity check.")] = None,
) -> None:
    """Export a checkpoint (or an untrained net by --spec) to ONNX and compare it with PyTorch
    on real test digits."""
    from cnn_deploy.data import load_mnist
    from cnn_deploy.errors import DataError
    from cnn_deploy.jobs import check_export
    from cnn_deploy.jobs import export as export_checked
    from cnn_deploy.train import load_checkpoint

    check_export(checkpoint, out, spec=spec, opset=opset, parity_tiles=parity_tiles)
    if checkpoint is not None and spec is None:
        load_checkpoint(checkpoint)  # a bad checkpoint is the error to report, not missing MNIST
    try:
        mnist = load_mnist(data) if parity_tiles > 0 else None
    except DataError as exc:
        raise DataError(f"{exc} (or skip the parity check with --parity-tiles 0)") from None
    with render.err.status(f"exporting {checkpoint or spec}..."):
        result = export_checked(checkpoint, out, spec=spec, data=mnist, opset=opset, fp16=fp16,
                                parity_tiles=parity_tiles)
    render.out.print(f"wrote {result.path} (opset {result.opset}, dynamic batch, raw 0..255 "
                     "pixels in: normalisation folded into the graph)", highlight=False, soft_wrap=True)
    for label, parity in (("fp32", result.parity), ("fp16", result.fp16_parity)):
        if parity is not None:
            render.out.print(
                f"parity {label} vs PyTorch on {parity.tiles} test digits: max abs error "
                f"{parity.max_abs_error:.2e}, top-1 agreement {parity.top1_agreement:.2%}, "
                f"ONNX accuracy {parity.accuracy:.2%}", highlight=False, soft_wrap=True)
    if result.fp16_path is not None:
        render.out.print(f"wrote {result.fp16_path} (fp16 graph)", highlight=False, soft_wrap=True)
    if spec is not None:
        render.note(f"{spec}: untrained weights (speed does not depend on them); the parity "
                    "check compares it with the same network in PyTorch, its accuracy means "
                    "nothing")
    if result.fp16_note:
        render.note(result.fp16_note)


def register(app: typer.Typer) -> None:
    app.command()(export)
