"""An ONNX file as every stage sees it: read it or say why not, its image-classifier input
contract (:class:`Signature`), and the cnn_deploy metadata props an export wrote into it.

A leaf: imports nothing of the package but :mod:`cnn_deploy.errors`; ``onnx`` lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnn_deploy.errors import ModelError

if TYPE_CHECKING:
    import onnx

META_PREFIX = "cnn_deploy."
_FLOAT_TYPES = {1: "float32", 10: "float16"}


@dataclass(frozen=True)
class Signature:
    """The model's input contract: NCHW float, batch ``None`` when dynamic."""

    input_name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    output_name: str = "logits"

    @property
    def fixed_batch(self) -> int | None:
        return self.shape[0]

    def example_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *(int(d) for d in self.shape[1:] if d is not None))


def load_onnx(path: Path, load_weights: bool = True) -> onnx.ModelProto:
    """Read an ONNX file or say clearly why not."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ModelError(f"no ONNX file at {path}: export one with `cnndeploy export "
                         "models/<net>.pt` or check the path")
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty (0 bytes; an export or a copy cut short?): re-export "
                         "it with `cnndeploy export`")
    try:
        proto = onnx.load(str(path), load_external_data=load_weights)
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path} is not a readable ONNX file ({exc.__class__.__name__}: "
                         f"{str(exc)[:200]}): re-export it with `cnndeploy export`") from None
    if not load_weights:
        _check_external_data(proto, path)
    return proto


def _check_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Weights kept in files beside the model must be there (and inside its folder)."""
    from onnx import TensorProto

    for tensor in proto.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        where = (path.parent / location).resolve()
        if not location or path.parent.resolve() not in where.parents or not where.is_file():
            raise ModelError(f"{path} keeps its weights in an external file '{location}' that is "
                             f"not beside it: copy that file next to {path.name}, or re-export "
                             "one self-contained file with `cnndeploy export`")


def image_signature(proto: onnx.ModelProto, path: Path) -> Signature:
    """The NCHW float input of an image classifier, or a clear error saying what was expected."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    expected = ("expected one NCHW float image batch input (N, C, H, W) with fixed C, H, W "
                "and a fixed or dynamic batch N")
    if len(inputs) != 1:
        raise ModelError(f"{path} has {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}): {expected}")
    (inp,) = inputs
    if not proto.graph.output:
        raise ModelError(f"{path} has no outputs: an image classifier gives (N, classes) scores; "
                         "re-export the model with its output")
    tensor = inp.type.tensor_type
    dims: list[int | None] = [d.dim_value if d.HasField("dim_value") else None
                              for d in tensor.shape.dim]
    if len(dims) == 4 and dims[3] in (1, 3) and dims[1] == dims[2] and (dims[1] or 0) > 3:
        shape = "(" + ", ".join("N" if d is None else str(d) for d in dims) + ")"
        raise ModelError(f"{path}'s input '{inp.name}' is channels-last (NHWC) {shape}: "
                         f"cnn_deploy feeds NCHW (N, {dims[3]}, {dims[1]}, {dims[2]}); re-export "
                         "the model with an NCHW input (e.g. tf2onnx --inputs-as-nchw "
                         f"{inp.name})")
    dtype = _FLOAT_TYPES.get(tensor.elem_type)
    if dtype is None or len(dims) != 4 or any(d is None for d in dims[1:]):
        shape = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
        import onnx

        type_name = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        raise ModelError(f"{path}'s input '{inp.name}' is {shape} {type_name}: {expected}")
    output = proto.graph.output[0].name
    return Signature(inp.name, tuple(dims), dtype, output)


def read_metadata(onnx_path: Path) -> dict[str, str]:
    """The cnn_deploy metadata props of an ONNX file (empty for files from elsewhere)."""
    proto = load_onnx(onnx_path, load_weights=False)
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props
            if p.key.startswith(META_PREFIX)}


def precision(onnx_path: Path | None) -> str:
    """The precision an export recorded (fp32 for files from elsewhere or no file)."""
    if onnx_path is None:
        return "fp32"
    return read_metadata(onnx_path).get("precision", "fp32")
