"""``accelc tune --target vta``: tile plans for a model's offloadable layers.

The layers are found exactly as ``accelc compile --target vta`` finds them (phases 1-2 with
int8 shift quantization, then the ``accelc.vta.*`` partitioning), so the specs tuned are the
specs compiled; ``tune.tune_model_layers`` measures plans on the simulator and appends them to
the log, and ``accelc compile --tuning-records LOG`` uses the best plan of each layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accelc.errors import AccelcError


@dataclass(frozen=True)
class ModelLayer:
    spec: object  # LayerSpec
    weight: np.ndarray
    bias: np.ndarray | None
    shift: np.ndarray
    op: str  # what it computes, for messages


def model_layers(model, backend, *, calib, input_shapes=None, opt_level: int = 3,
                 calib_method: str = "entropy", target_options: dict | None = None) -> list[ModelLayer]:
    """The distinct layers ``--target vta`` would offload, in graph order (those
    ``backend.skip_layers`` keeps on the host left out)."""
    import tvm

    from accelc import api, pipeline
    from accelc.frontend import import_onnx
    from accelc.passes.fuse_target_patterns import FuseTargetPatterns

    from . import patterns as P
    from .offload import _matched, composite_name, conv2d_indices, describe, layer_spec, layer_weight

    target = backend.make(target_options)
    imported = import_onnx(model, input_shapes)
    graph_passes = api._quantize_passes(imported, opt_level, "int8", calib,
                                        dict(calib_method=calib_method, requantize="shift"))
    opts = pipeline.PipelineOptions(opt_level=opt_level, graph_passes=graph_passes)
    mod = imported.mod
    with target, tvm.transform.PassContext(opt_level=opt_level):
        for _, passes in pipeline.phases(opts, backend, target)[:2]:
            if passes:
                mod = tvm.transform.Sequential(passes)(mod)
        mod = FuseTargetPatterns("vta")(mod)
    conv_index, _ = conv2d_indices(mod)
    layers, seen = [], set()
    for binding in (b for block in mod["main"].body.blocks for b in block.bindings):
        call = binding.value
        name = composite_name(mod, call)
        if name is None or conv_index.get(call.op, -1) in backend.skip_layers:
            continue
        params = P.layer_params(name, _matched(name, mod[call.op], call.args))
        spec = layer_spec(params)
        if spec in seen:
            continue
        seen.add(spec)
        layers.append(ModelLayer(spec, layer_weight(params), params.bias, params.shift, describe(params)))
    return layers


def run_tune(args, backend):
    """``accelc tune --target vta MODEL --calib DATA -o LOG [--trials N]``."""
    from accelc.frontend import parse_input_shapes
    from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path

    from .tune import tune_model_layers

    model, shapes = args.model, parse_input_shapes(list(args.input_shape)) or None
    if model is None:
        model, shapes = str(default_model_path()), shapes or dict(DEFAULT_INPUT_SHAPE)
    if getattr(args, "calib", None) is None:
        raise AccelcError("accelc tune --target vta: --calib DATA is required (the layers tuned are the "
                          "int8 layers compile makes, and quantizing needs calibration data)")
    layers = model_layers(model, backend, calib=args.calib, input_shapes=shapes, opt_level=args.opt_level,
                          calib_method=getattr(args, "calib_method", "entropy"))
    if args.list_tasks:
        print(f"{len(layers)} VTA layer(s) of {model} for {backend.cfg.name}:")
        for i, layer in enumerate(layers):
            print(f"  {i:3d}  {layer.op}")
        return None
    if not args.log:
        raise AccelcError("accelc tune: -o/--log PATH is required (the tuning log to write or resume)")
    trials = args.trials or 16 * len(layers)
    per_layer = max(1, trials // max(1, len(layers)))
    print(f"tuning {len(layers)} VTA layer(s), {per_layer} plan(s) each, log {args.log}")
    return tune_model_layers([(l.spec, l.weight, l.bias, l.shift) for l in layers], backend.cfg,
                             per_layer, args.log, progress=print)
