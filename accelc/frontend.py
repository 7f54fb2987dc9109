"""ONNX front end: load a model, check it, and import it into Relax.

Everything that can be wrong with a user's model is found here, before TVM sees it, and
reported as one ``AccelcError``: a missing or damaged file, every unsupported op at once, and
each dynamic dimension that needs ``--input-shape``.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from .errors import AccelcError, ModelLoadError, ShapeError, UnsupportedOpsError
from .signature import TensorSpec

ModelLike = "str | Path | onnx.ModelProto"

# Ops the importer handles outside its converter table.
_DIRECTLY_HANDLED = {"If", "Constant"}


@dataclass(frozen=True)
class ImportedModel:
    """A Relax module with the signature the ONNX graph promised."""

    mod: object  # tvm.IRModule
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    name: str
    sha256: str


def load_onnx(model) -> onnx.ModelProto:
    """Return ``model`` as a ModelProto, turning every load failure into a one-line error."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        path = Path(model)
        if not path.exists():
            raise ModelLoadError(f"model file not found: {path}")
        if not path.is_file():
            raise ModelLoadError(f"model path is not a file: {path}")
        if path.stat().st_size == 0:
            raise ModelLoadError(f"model file is empty: {path}")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ...
            raise ModelLoadError(
                f"{path} is not a readable ONNX model (truncated or not ONNX): "
                f"{_first_line(exc)}"
            ) from exc
        _require_graph(proto, str(path))
    _require_graph(proto, "model")
    return proto


def _require_graph(proto: onnx.ModelProto, where: str) -> None:
    # A protobuf parser accepts many byte strings that are not models (an empty message is
    # valid protobuf), so a model without IR version or graph outputs is rejected here.
    if proto.ir_version <= 0 or not proto.graph.output:
        raise ModelLoadError(f"{where} is not an ONNX model (no IR version or no graph outputs)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def supported_op_types() -> set[str]:
    """The op types TVM's Relax ONNX importer can convert."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map()) | _DIRECTLY_HANDLED


def iter_nodes(graph: onnx.GraphProto):
    """Every node of ``graph``, including those in subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_nodes(g)


def unsupported_ops(model) -> dict[str, list[str]]:
    """Map each unsupported op type in ``model`` to the names of the nodes using it."""
    from .quantize.onnx_import import QOPERATOR_OPS  # rewritten into QDQ before the import

    proto = load_onnx(model)
    supported = supported_op_types() | QOPERATOR_OPS
    found: dict[str, list[str]] = {}
    for i, node in enumerate(iter_nodes(proto.graph)):
        if node.op_type not in supported:
            label = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            found.setdefault(label, []).append(node.name or f"#{i}")
    return found


def op_histogram(model) -> Counter:
    return Counter(n.op_type for n in iter_nodes(load_onnx(model).graph))


def graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The true inputs: graph inputs that are not also initializers (old exporters list both)."""
    inits = {i.name for i in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in inits]


def _elem_dtype(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem)))
    except Exception as exc:
        raise AccelcError(f"input {value.name!r} has unsupported element type {elem}") from exc


def parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """Parse CLI ``NAME:D0,D1,...`` items (a name may itself contain ':')."""
    shapes: dict[str, list[int]] = {}
    for spec in specs or []:
        name, sep, dims = spec.rpartition(":")
        if not sep or not name:
            raise ShapeError(f"--input-shape {spec!r}: expected NAME:D0,D1,...")
        try:
            shape = [int(d) for d in dims.split(",")] if dims.strip() else []
        except ValueError:
            raise ShapeError(f"--input-shape {spec!r}: dimensions must be integers") from None
        if any(d <= 0 for d in shape):
            raise ShapeError(f"--input-shape {spec!r}: dimensions must be positive")
        shapes[name] = shape
    return shapes


def resolve_inputs(proto: onnx.ModelProto, input_shapes: dict | None) -> tuple[TensorSpec, ...]:
    """Fix every input's shape: from the model, or from ``input_shapes`` where given.

    A dynamic dimension (a ``dim_param`` or an unknown size) without a user-given shape is an
    error naming the input and the dimension, because the kernels are compiled for one shape.
    """
    input_shapes = dict(input_shapes or {})
    inputs = graph_inputs(proto)
    names = [v.name for v in inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise ShapeError(f"--input-shape names unknown input {unknown[0]!r}; inputs are {names}")
    specs = []
    for value in inputs:
        dtype = _elem_dtype(value)
        tensor_type = value.type.tensor_type
        dims = list(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
        if value.name in input_shapes:
            shape = [int(d) for d in input_shapes[value.name]]
            if dims is not None and len(dims) != len(shape):
                raise ShapeError(
                    f"--input-shape {value.name}: rank {len(shape)} given, "
                    f"the model's input has rank {len(dims)}"
                )
            for i, (d, given) in enumerate(zip(dims or [], shape)):
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != given:
                    raise ShapeError(
                        f"--input-shape {value.name}: dimension {i} is fixed to {d.dim_value} "
                        f"in the model, {given} given"
                    )
        else:
            if dims is None:
                raise ShapeError(
                    f"input {value.name!r} has no shape in the model; "
                    f"give --input-shape {value.name}:D0,D1,..."
                )
            shape = []
            for i, d in enumerate(dims):
                if d.HasField("dim_value") and d.dim_value > 0:
                    shape.append(d.dim_value)
                else:
                    label = f" ({d.dim_param!r})" if d.dim_param else ""
                    raise ShapeError(
                        f"input {value.name!r} dimension {i}{label} is dynamic; "
                        f"give --input-shape {value.name}:D0,D1,... "
                        f"(e.g. {value.name}:{_example_shape(dims)})"
                    )
        specs.append(TensorSpec(value.name, tuple(shape), dtype))
    return tuple(specs)


def _example_shape(dims) -> str:
    return ",".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else "1" for d in dims)


def model_sha256(proto: onnx.ModelProto) -> str:
    return hashlib.sha256(proto.SerializeToString()).hexdigest()


def import_onnx(model, input_shapes: dict | None = None) -> ImportedModel:
    """Check ``model`` and import it into a Relax IRModule with static input shapes."""
    original = proto = load_onnx(model)
    from .quantize.onnx_import import convert_prequantized

    proto, _ = convert_prequantized(proto)  # QOperator ops, uint8 QDQ -> int8 QDQ (exact)
    missing = unsupported_ops(proto)
    if missing:
        raise UnsupportedOpsError(missing)
    inputs = resolve_inputs(proto, input_shapes)

    from tvm.relax.frontend.onnx import from_onnx

    with warnings.catch_warnings():
        # The importer runs onnx.checker and re-emits its complaints as warnings; the model
        # either imports or fails below, so they are noise here.
        warnings.simplefilter("ignore")
        try:
            mod = from_onnx(
                proto,
                shape_dict={t.name: list(t.shape) for t in inputs},
                dtype_dict={t.name: t.dtype for t in inputs},
                keep_params_in_input=False,
            )
        except AccelcError:
            raise
        except Exception as exc:  # the importer raises ValueError, TVMError, KeyError, ...
            raise AccelcError(f"ONNX import failed: {type(exc).__name__}: {_first_line(exc)}") from exc

    outputs = _output_specs(mod, proto)
    name = proto.graph.name or "model"
    return ImportedModel(mod, inputs, outputs, name, model_sha256(original))


def _output_specs(mod, proto: onnx.ModelProto) -> tuple[TensorSpec, ...]:
    import tvm
    from tvm import relax

    ret = mod["main"].ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    names = [o.name for o in proto.graph.output]
    if len(fields) != len(names):
        raise AccelcError(
            f"ONNX import produced {len(fields)} outputs for the graph's {len(names)}"
        )
    specs = []
    for name, ty in zip(names, fields):
        if not isinstance(ty, relax.TensorType):
            raise AccelcError(f"output {name!r} is not a tensor ({ty}); accelc supports tensor outputs")
        shape = None if ty.shape is None else tuple(
            int(d.value) if isinstance(d, tvm.tirx.IntImm) else None for d in ty.shape.values
        )
        specs.append(TensorSpec(name, shape, str(ty.dtype)))
    return tuple(specs)
