"""LegalizePackedOps: lower packed conv2d and constant-weight matmul to accelc TE kernels."""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import IRModule, relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from . import compute
from .config import CpuScheduleConfig
from .convert_conv2d_layout import is_narrow_group_1x1
from .schedule_utils import static_shape

_NCHWC = re.compile(r"^NCHW(\d+)c$")
_OIHWIO = re.compile(r"^OIHW(\d+)i(\d+)o$")


@tvm.transform.module_pass(opt_level=0, name="LegalizePackedOps")
class LegalizePackedOps:  # pylint: disable=too-few-public-methods
    """Replace (1) ``relax.nn.conv2d`` in NCHW{c}c / OIHW{i}i{o}o layout (and narrow-group
    1x1 NCHW conv2d, see ``is_narrow_group_1x1``) and (2) ``relax.matmul``
    whose right operand is a 2-D fp32 constant by ``call_tir`` of the kernels in
    :mod:`.compute`; the matmul weight is packed into ``[N/bn, K, bn]`` panels with a
    ``layout_transform`` that FoldConstant evaluates at compile time.

    Runs before LegalizeOps (which cannot lower 5-D conv2d). Any call that fails a guard is
    left unchanged for LegalizeOps. Counts: ``self.rewrites`` after the pass has run.
    """

    def __init__(self, config: CpuScheduleConfig, pack_dense: bool = True):
        self.config = config
        self.pack_dense = pack_dense
        self.rewrites: dict[str, int] = {}

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        rewriter = _Rewriter(mod, self.config, self.pack_dense)
        for g_var, func in mod.functions_items():
            if isinstance(func, relax.Function):
                func = rewriter.visit_expr(func)
                rewriter.builder_.update_func(g_var, func)
        self.rewrites = dict(rewriter.rewrites)
        return rewriter.builder_.get()


@mutator
class _Rewriter(PyExprMutator):  # pylint: disable=abstract-method
    def __init__(self, mod: IRModule, config: CpuScheduleConfig, pack_dense: bool):
        super().__init__(mod)
        self.config = config
        self.pack_dense = pack_dense
        self.rewrites: dict[str, int] = {}

    def _count(self, name):
        self.rewrites[name] = self.rewrites.get(name, 0) + 1

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        if call.op.name == "relax.nn.conv2d":
            return self._conv2d(call)
        if call.op.name == "relax.matmul" and self.pack_dense:
            return self._matmul(call)
        return call

    def _conv2d(self, call: relax.Call) -> relax.Expr:
        attrs = call.attrs
        if is_narrow_group_1x1(call, self.config):
            out_dtype = attrs.out_dtype or "float32"
            if str(out_dtype) not in ("float32", ""):
                return call
            self._count("conv2d_1x1_nchw")
            groups = int(attrs.groups)
            dshape, wshape = static_shape(call.args[0]), static_shape(call.args[1])
            rows, vecs = self.config.conv1x1_tile(wshape[0] // groups, dshape[2] * dshape[3])
            weight = call.args[1]
            if isinstance(weight, tvm.ir.expr.Constant):  # [O, cg, 1, 1] -> [O / rows, cg, rows]
                w = weight.value.numpy()[:, :, 0, 0]
                packed = w.reshape(w.shape[0] // rows, rows, w.shape[1]).transpose(0, 2, 1)
                weight = relax.const(np.ascontiguousarray(packed))
            return self.builder_.call_te(
                compute.conv2d_1x1_nchw, call.args[0], weight, groups, "float32",
                self.config.vector_lanes * vecs, rows, primfunc_name_hint="conv2d_1x1_nchw",
            )
        data_m = _NCHWC.match(attrs.data_layout)
        out_m = _NCHWC.match(attrs.out_layout)
        kern_m = _OIHWIO.match(attrs.kernel_layout)
        if not (data_m and out_m and kern_m):
            return call
        data, kernel = call.args
        dshape, kshape = static_shape(data), static_shape(kernel)
        if dshape is None or kshape is None or data.ty.dtype != "float32":
            return call
        out_dtype = attrs.out_dtype or "float32"
        if str(out_dtype) not in ("float32", ""):
            return call
        out_dtype = "float32"
        groups = int(attrs.groups)
        in_ch = dshape[1] * dshape[4]
        ob = int(out_m.group(1))
        if int(kern_m.group(2)) != ob:
            return call
        strides = [int(s) for s in attrs.strides]
        dilation = [int(d) for d in attrs.dilation]
        padding = [int(p) for p in attrs.padding]
        oh_ow = compute.out_hw(dshape[2:4], kshape[2:4], strides, padding, dilation)
        reg_n = self.config.conv_reg_n(oh_ow[1], ob)
        if groups > 1 and groups == in_ch and kshape[1] == 1 and kshape[4] == 1:
            if dshape[4] != ob:
                return call
            self._count("depthwise_conv2d_nchwc")
            return self.builder_.call_te(
                compute.depthwise_conv2d_nchwc, data, kernel, strides, padding, dilation,
                out_dtype, reg_n, primfunc_name_hint="depthwise_conv2d_nchwc",
            )
        if groups > 1 and (dshape[1] % groups or kshape[0] % groups):
            return call
        self._count("conv2d_nchwc")
        reg_n, oc_vecs = self.config.conv_tile(
            oh_ow[1], ob, kshape[0] // groups, pointwise=kshape[2] == kshape[3] == 1, unpadded=not any(padding))
        return self.builder_.call_te(
            compute.conv2d_nchwc, data, kernel, strides, padding, dilation, groups,
            out_dtype, reg_n, oc_vecs, primfunc_name_hint="conv2d_nchwc",
        )

    def _matmul(self, call: relax.Call) -> relax.Expr:
        data, weight = call.args
        if not isinstance(weight, tvm.ir.expr.Constant):
            return call
        dshape, wshape = static_shape(data), static_shape(weight)
        if dshape is None or wshape is None or len(wshape) != 2 or len(dshape) < 2:
            return call
        if data.ty.dtype != "float32" or weight.ty.dtype != "float32":
            return call
        if call.attrs.out_dtype not in ("", "float32", None):
            return call
        k, n = wshape
        bn = self.config.dense_block_n
        index_map = tirx.IndexMap.from_func(lambda kk, nn: [nn // bn, kk, nn % bn])
        packed = self.builder_.emit(
            relax.op.layout_transform(
                weight, index_map, pad_value=0.0 if n % bn else None
            )
        )
        self._count("dense_packed")
        if len(dshape) == 2 or sum(d != 1 for d in dshape[:-1]) <= 1:
            # (1, rows, K) as is: no reshape between the kernel and its epilogue, so FuseOps
            # fuses bias/GELU/residual into the dense (unit axes fuse into one row loop).
            return self.builder_.call_te(
                compute.dense_packed, data, packed, n, "float32", primfunc_name_hint="dense_packed"
            )
        # Batched activations go through the kernel as one [rows, K] matrix: the dense
        # schedule tiles a single row axis (over several batch axes it computed wrong rows
        # for shapes like (3, 6, 5), tests/test_fuzz.py::test_batched_matmul_by_constant).
        rows = 1
        for d in dshape[:-1]:
            rows *= d
        flat = self.builder_.emit(relax.op.reshape(data, [rows, k]))
        product = self.builder_.emit(
            self.builder_.call_te(
                compute.dense_packed, flat, packed, n, "float32", primfunc_name_hint="dense_packed"
            )
        )
        return relax.op.reshape(product, [*dshape[:-1], n])
