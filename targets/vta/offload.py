"""VTAOffload: compile every ``accelc.vta.*`` group to a VTA program and call it from the graph.

Position: phase 3 (fusion), right after ``FuseTargetPatterns("vta")`` made the groups.
Precondition: groups are functions with ``Composite=accelc.vta.conv2d|dense`` whose
parameters are the layer input followed by the chain's constants (``bind_constants=False``).
Each offloaded call becomes

    y = R.call_dps_packed("accelc.vta.run_layer", (x, blob), out_ty=R.Tensor(shape, "int8"))

where ``blob`` is a uint8 constant holding the compiled layer (``runtime.pack_layer``: a small
JSON header naming the layer and the VTA config, then ``CompiledLayer.to_bytes()``). The
group functions are removed; groups that stay on the host (``skip_layers``, no tiling fits) are
inlined back into ``main``. Invariant: the graph computes the same int8 values; everything
not offloaded is untouched and compiles for the host CPU.

``skip_layers`` are conv2d indices (graph order from 0, offloadable or not, as
``--keep-float conv2d:N`` counts) whose groups stay CPU kernels (``--vta-skip-layers``).

The pass also adds the public function ``accelc_vta_layers`` returning the layer table (JSON
as uint8): every conv2d/matmul of the model, where it runs, and for CPU ones why
(``patterns.fallback_reason``, ``vta-skip-layers``, or the planner's refusal), in graph
order. ``accelc compile`` and ``accelc run --profile`` print it from the artifact. ``layers`` holds the same table after the run, ``num_offloaded`` the count.
"""

from __future__ import annotations

import json

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from accelc.errors import TargetError

from . import patterns as P
from .runtime import LAYER_TABLE_FUNC, RUN_LAYER, pack_layer

_CONV2D, _MATMUL = tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")


def layer_spec(params: P.LayerParams):
    """The ``LayerSpec`` of a matched layer (``layer.py``'s data layout conventions)."""
    from .layer import LayerSpec

    if params.kind == "conv2d":
        n, c, h, w = params.data_shape
        oc, _, kh, kw = params.weight.shape
        return LayerSpec(kind="conv2d", batch=n, in_channels=c, out_channels=oc, height=h, width=w,
                         kernel=(kh, kw), stride=params.strides, padding=params.padding, relu=params.relu)
    n, ic = params.data_shape
    return LayerSpec(kind="dense", batch=n, in_channels=ic, out_channels=params.weight.shape[1], relu=params.relu)


def layer_weight(params: P.LayerParams) -> np.ndarray:
    """conv2d: OIHW as in the graph; dense: the graph's (IC, OC) matmul operand as (OC, IC)."""
    return params.weight if params.kind == "conv2d" else np.ascontiguousarray(params.weight.T)


def describe(params: P.LayerParams) -> str:
    if params.kind == "conv2d":
        n, c, h, w = params.data_shape
        oc, _, kh, kw = params.weight.shape
        text = f"conv2d {c}->{oc} k{kh}x{kw} s{params.strides[0]} in {h}x{w}"
    else:
        text = f"dense {params.data_shape[1]}->{params.weight.shape[1]}"
    return text + (" +relu" if params.relu else "")


def _matched(name: str, func: relax.Function, args) -> dict:
    """The annotated expressions of group ``func`` called with ``args`` (constants bound)."""
    bound = func.bind_params({p: a for p, a in zip(func.params[1:], args[1:])})
    var2val = relax.analysis.get_var2val(bound)
    result = bound.body.body
    for pname, pattern, annotations, _ in P.vta_patterns():
        if pname != name:
            continue
        found = pattern.extract_matched_expr(result, var2val)
        if found is not None:
            return {key: found[p] for key, p in annotations.items() if p in found}
    raise ValueError(f"group {func} no longer matches {name}")


def composite_name(mod: tvm.IRModule, call) -> str | None:
    """``accelc.vta.conv2d|dense`` for a call of such a group, else None."""
    if not isinstance(call, relax.Call) or not isinstance(call.op, relax.GlobalVar):
        return None
    func = mod[call.op]
    name = func.attrs.get("Composite") if func.attrs is not None else None
    return name if name in (P.CONV2D, P.DENSE) else None


def conv2d_indices(mod: tvm.IRModule) -> tuple[dict, int]:
    """``({group GlobalVar: conv2d index}, number of conv2d)`` over ``main`` in graph order;
    conv2d left as plain calls (not grouped) count too, so indices are the model's."""
    groups, count = {}, 0
    for binding in (b for block in mod["main"].body.blocks for b in block.bindings):
        call = binding.value
        if composite_name(mod, call) == P.CONV2D:
            groups[call.op] = count
        elif not (isinstance(call, relax.Call) and call.op.same_as(_CONV2D)):
            continue
        count += 1
    return groups, count


def skip_reason(params: P.LayerParams, index: int, skip_layers, cfg) -> str:
    text = f"conv2d layer {index} kept on the CPU by vta-skip-layers={','.join(map(str, skip_layers))}"
    channels = params.data_shape[1]
    if channels < cfg.block_in:  # why the default skips the stem
        text += f" (its {channels} input channels would fill {channels} of VTA's {cfg.block_in} GEMM lanes)"
    return text


@mutator
class _Offloader(PyExprMutator):
    def __init__(self, mod, cfg, plans, virtual_threads, skip_layers, conv_index):
        super().__init__(mod)
        self.mod, self.cfg, self.plans, self.virtual_threads = mod, cfg, plans or {}, virtual_threads
        self.skip_layers, self.conv_index = tuple(skip_layers), conv_index
        # Graph positions of the layers (conv2d/matmul calls and groups) in visiting order, which
        # is binding order: VTA rows carry theirs, CPU rows get ``cpu_positions`` in turn.
        self.num_visited, self.cpu_positions = 0, []
        self.layers: list[dict] = []
        self.refused: dict = {}  # group GlobalVar -> its row: matched, but kept on or refused to the CPU
        self.offloaded: set = set()

    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = composite_name(self.mod, call)
        if name is None:
            if call.op.same_as(_CONV2D) or call.op.same_as(_MATMUL):
                self.cpu_positions.append(self._position())
            return call
        position = self._position()
        from .config import VTAError
        from .layer import compile_layer

        params = P.layer_params(name, _matched(name, self.mod[call.op], call.args))
        kind = "conv2d" if params.kind == "conv2d" else "matmul"
        index = self.conv_index.get(call.op)
        if index is not None and index in self.skip_layers:
            self.refused[call.op] = {"where": "cpu", "op": describe(params), "kind": kind, "skipped": True,
                                     "reason": skip_reason(params, index, self.skip_layers, self.cfg)}
            self.cpu_positions.append(position)
            return call
        spec = layer_spec(params)
        plan = self.plans.get(spec.key)  # tune.load_best_plans: LayerSpec.key -> TilePlan
        try:
            compiled = compile_layer(spec, layer_weight(params), params.bias, params.shift, self.cfg, plan,
                                     virtual_threads=self.virtual_threads)
        except VTAError as exc:  # no tiling fits this config: the group compiles for the CPU
            self.refused[call.op] = {"where": "cpu", "op": describe(params), "kind": kind,
                                     "reason": f"does not fit VTA {self.cfg.name}: {exc}"}
            self.cpu_positions.append(position)
            return call
        layer_name = f"vta.{params.kind}_{sum(r['where'] == 'vta' for r in self.layers)}"
        blob = pack_layer(layer_name, compiled, self.cfg, describe(params))
        self.layers.append({"name": layer_name, "where": "vta", "op": describe(params), "pos": position,
                            "macs": _macs(params), "plan": str(compiled.plan),
                            "tuned": plan is not None})
        self.offloaded.add(call.op)
        return relax.call_dps_packed(RUN_LAYER, [call.args[0], relax.const(blob)],
                                     out_ty=relax.TensorType(params.out_shape, "int8"))

    def _position(self) -> int:
        self.num_visited += 1
        return self.num_visited - 1


def _macs(params: P.LayerParams) -> int:
    out = int(np.prod(params.out_shape))
    per = int(np.prod(params.weight.shape[1:])) if params.kind == "conv2d" else params.weight.shape[0]
    return out * per


def cpu_layers(func: relax.Function, refused: dict | None = None) -> list[dict]:
    """Every conv2d/matmul still in ``func`` (so: on the CPU) and why it is not on VTA, in graph
    order; ``refused`` rows stand for calls of groups that no VTA tiling fits."""
    refused = refused or {}
    var2val = relax.analysis.get_var2val(func)
    users: dict = {}
    for var, value in var2val.items():
        for arg in _var_args(value):
            users.setdefault(arg, []).append(var)
    out = []
    for var, value in var2val.items():
        if isinstance(value, relax.Call) and value.op in refused:
            row = dict(refused[value.op], var=str(var.name))
            out.append(dict(row, name=f"cpu.{row['kind']}_{sum(r['kind'] == row['kind'] for r in out)}"))
        elif isinstance(value, relax.Call) and (value.op.same_as(_CONV2D) or value.op.same_as(_MATMUL)):
            kind = "conv2d" if value.op.same_as(_CONV2D) else "matmul"
            out.append({"name": f"cpu.{kind}_{sum(r['kind'] == kind for r in out)}", "where": "cpu", "kind": kind,
                        "op": _describe_op(kind, value), "var": str(var.name),
                        "reason": P.fallback_reason(var, value, var2val, users)})
    return out


def _var_args(value) -> list:
    if isinstance(value, relax.Call):
        return [a for a in value.args if isinstance(a, relax.Var)]
    if isinstance(value, relax.Tuple):
        return [a for a in value.fields if isinstance(a, relax.Var)]
    return []


def _describe_op(kind: str, call) -> str:
    x, w = (P._shape(a) for a in call.args[:2])
    dtype = P._dtype(call.args[0])
    if kind == "conv2d" and x and w and len(w) == 4:
        return f"conv2d {x[1]}->{w[0]} k{w[2]}x{w[3]} s{int(call.attrs.strides[0])} in {x[2]}x{x[3]} {dtype}"
    return f"{kind} {list(x) if x else '?'} x {list(w) if w else '?'} {dtype}"


@tvm.transform.module_pass(opt_level=0, name="VTAOffload")
class VTAOffload:
    def __init__(self, cfg, plans: dict | None = None, virtual_threads: int = 2,
                 skip_layers: tuple[int, ...] = (), check_skip_layers: bool = False):
        self.cfg, self.plans, self.virtual_threads = cfg, plans, virtual_threads
        self.skip_layers, self.check_skip_layers = tuple(skip_layers), check_skip_layers
        self.layers: list[dict] = []
        self.num_offloaded = 0

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        gv = mod.get_global_var("main")
        conv_index, num_convs = conv2d_indices(mod)
        missing = [i for i in self.skip_layers if i >= num_convs]
        if self.check_skip_layers and missing:
            raise TargetError(f"--vta-skip-layers {','.join(map(str, self.skip_layers))}: the model has "
                              f"{num_convs} conv2d layer(s) (0..{num_convs - 1}), no layer {missing[0]}")
        offloader = _Offloader(mod, self.cfg, self.plans, self.virtual_threads, self.skip_layers, conv_index)
        main = offloader.visit_expr(mod[gv])
        offloader.builder_.update_func(gv, main)
        out = offloader.builder_.get()
        for group in offloader.offloaded:
            out = _without(out, group)
        on_cpu = cpu_layers(out["main"], offloader.refused)  # graph order, as visited
        if len(on_cpu) == len(offloader.cpu_positions):
            on_cpu = [dict(r, pos=p) for r, p in zip(on_cpu, offloader.cpu_positions)]
        # graph order; a row without a position (should not happen) goes last
        self.layers = sorted(offloader.layers + on_cpu, key=lambda r: r.get("pos", offloader.num_visited))
        self.num_offloaded = len(offloader.layers)
        table = np.frombuffer(json.dumps({"layers": self.layers}).encode(), np.uint8)
        # A public function, so it survives dead-code elimination and is callable from the VM.
        table_func = relax.Function([], relax.SeqExpr([], relax.const(table)), relax.TensorType(table.shape, "uint8"))
        out[LAYER_TABLE_FUNC] = table_func.with_attr("global_symbol", LAYER_TABLE_FUNC)
        if offloader.refused:
            # Groups kept on the host become plain ops again, so the host code is built exactly as
            # for --target llvm (layout passes such as FastMathTransform expect no calls of Relax
            # functions in main). They are the only private Relax functions here. Inlining binds
            # their constant parameters to variables; CanonicalizeBindings puts the constants back
            # into the ops, where the CPU layout passes look for constant weights.
            out = relax.transform.CanonicalizeBindings()(relax.transform.InlinePrivateFunctions()(out))
        return out


def _without(mod: tvm.IRModule, gv) -> tvm.IRModule:
    funcs = {g: f for g, f in mod.functions_items() if not g.same_as(gv)}
    return tvm.IRModule(funcs, attrs=mod.attrs)
