"""int8 x int8 -> int32 conv2d / dense for the LLVM CPU target: packed layouts + tensorized dot.

What the quantizer leaves (``passes/quantize_realize.py``) is a plain NCHW ``conv2d`` or a 2-D
``matmul`` of an int8 activation by an int8 *constant* weight with ``out_dtype="int32"``,
followed by elementwise bias / relu / requantize. :class:`LegalizeInt8Ops` lowers each one to
a TE kernel of this file; the elementwise tail is then fused into it by FuseOps and computed
from the kernel's register tile by the schedule rules (``place_epilogue``).

The inner product is one x86 instruction sequence, chosen from the target:

    avx512vnni   vpdpbusd zmm   16 int32 lanes x 4 u8*s8 products       (``lanes=16``)
    avxvnni      vpdpbusd ymm    8 lanes (VEX encoding, Alder Lake/Zen 4 class)
    avx2         vpsignb + vpmaddubsw + vpmaddwd + vpaddd, 8 lanes

u8 x s8 and exactness:
  * VNNI multiplies *unsigned* bytes by signed bytes, without intermediate saturation. The int8
    activation is made unsigned by ``x + 128`` in the packing block (padding becomes 128) and
    ``sum((x + 128) * w) - 128 * sum(w)`` is undone by a per-output-channel compensation
    ``comp[o] = -128 * sum(w[o])`` computed at compile time with numpy. Exact.
  * AVX2's vpmaddubsw adds two u8*s8 products into a *saturating* int16: with ``x + 128`` up to
    255 and |w| up to 127, 2 * 255 * 127 = 64770 overflows. Instead of onnxruntime's
    ``reduce_range`` (7-bit weights: a different quantization, not bit-exact with our graph)
    we keep activations signed and move the sign onto the weight:
    ``x * w == |x| * (sign(x) * w)`` -> ``vpmaddubsw(vpsignb(x, x), vpsignb(w, x))``.
    |x| <= 128 and |sign(x) * w| <= 127 (the quantizer clips weights to [-127, 127]), so a
    pair is at most 2 * 128 * 127 = 32512 < 32767: no saturation, exact. The price is one
    vpsignb per vpmaddubsw. A weight of -128 would break this: the legalization checks the
    constant and leaves such a layer to the generic kernel.

Layouts (weights packed once, at compile time, in numpy):
    conv  activations NCHW int8 -> packing block inside the kernel: NCHW[4]c u8 (x + 128),
          spatially padded; the pixel-lanes kernel builds each 4-channel quad as one int32
          *word* with shifts and ors on int32 vectors (vectorized like a copy; a byte-interleaving
          block stores strided bytes one by one) and its vpdpbusd reads the word vector as the
          u8 operand. Stride 2 with an even width reads the input as int16 column pairs (a
          Relax memory view) so that the pack loads contiguous vectors. Output NCHW int32, the
          requantize epilogue fused into the tile.
    dense activations [M, K] -> [M, K/4, 4]; weights [K, N] -> [N/lanes, K/4, lanes, 4].
    depthwise  KW <= 3 on AVX-512 VNNI (``depthwise_conv2d_int8_words``): the KW taps of one
          kernel row are the bytes of one int32 word, built per channel right before use; a
          3x3 output row is 3 vpdpbusd per 16 pixels. Otherwise (5x5, AVX2, AVX-VNNI)
          ``depthwise_conv2d_int8_lanes``: phase-split padded rows, int32 multiply-adds, output
          pixels on lanes.
Padding: TVM's vectorizer scalarizes a whole loop for an ``if_then_else`` whose condition varies
along the vector, so the packs test padded *columns* with a ``Select`` around an in-bounds load
(:func:`_load_or_zero`) and keep ``if_then_else`` for rows (uniform along the vector).
Requantize: an int64 multiply by an int64 multiplier that fits int32 is rewritten so that the
multiplier is widened inside the kernel (``vpmuldq``, 1 uop, instead of ``vpmullq``, 3 uops).
Register tiles are given global scope (TVM serves "local" CPU allocations with a workspace call
per tile) and, for shallow reductions, kept under 1 KiB so that they live on the stack.
Dense conv kernels come in two orientations: output channels on lanes (``conv2d_int8``,
weights [O/L, I/4, KH, KW, L, 4]) or output pixels on lanes (``conv2d_int8_rows``: the
activation word vector times a broadcast weight quad, weights [O/R, I/4, KH, KW, R, 4]), the
latter wherever output rows fill vectors (its epilogue stores NCHW rows contiguously).
Grouped (non-depthwise) int8 conv stays on the generic kernel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import IRModule, relax, s_tir, te, tirx, topi
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.script import tirx as T
from tvm.target import Target

from . import compute
from .config import CpuScheduleConfig, _has, config_from_target
from .schedule_utils import (
    CpuRule,
    find_rule_block, loop_extent, place_epilogue, producers_before, schedule_injective, static_shape,
)

CONV2D_INT8 = "accelc.llvm_cpu.conv2d_int8"
CONV2D_INT8_ROWS = "accelc.llvm_cpu.conv2d_int8_rows"
DEPTHWISE_INT8_LANES = "accelc.llvm_cpu.depthwise_conv2d_int8_lanes"
DEPTHWISE_INT8_WORDS = "accelc.llvm_cpu.depthwise_conv2d_int8_words"
# TVM's LowerTVMBuiltin keeps CPU allocations under this many bytes on the stack (kMaxStackAlloca)
STACK_TILE_BYTES = 1024
SHALLOW_DEPTH = 512  # IC*KH*KW below which a conv tile's fixed costs (alloc, epilogue) dominate
DENSE_INT8 = "accelc.llvm_cpu.dense_int8"


# -- tensor intrinsics ----------------------------------------------------------------------
@dataclass(frozen=True)
class DotKind:
    """One x86 int8 dot-product flavour: ``lanes`` int32 outputs, each a sum of 4 products."""

    name: str  # registered TensorIntrin name
    lanes: int
    unsigned: bool  # activations enter as x + 128 (u8), compensation in the bias


VNNI512 = DotKind("accelc_dot_16x4_vnni512", 16, True)
VNNI256 = DotKind("accelc_dot_8x4_avxvnni", 8, True)
AVX2 = DotKind("accelc_dot_8x4_avx2_sign", 8, False)
DOT_KINDS = {k.name: k for k in (VNNI512, VNNI256, AVX2)}
# Pixel-lanes flavours (conv2d_int8_rows): lanes are output pixels, the weight is broadcast.
ROWS_VNNI512 = "accelc_dot_rows_16x4_vnni512"
ROWS_VNNI256 = "accelc_dot_rows_8x4_vnni256"
WORD_SUFFIX = "_word"  # the VNNI flavours reading 4 u8 channels as one int32 word (conv2d_int8)


def dot_kind(target: Target) -> DotKind | None:
    """The fastest exact int8 dot product ``target`` has, or None (then no int8 kernels)."""
    if _has("avx512vnni", target) and _has("avx512bw", target):
        return VNNI512
    if _has("avxvnni", target) or (_has("avx512vnni", target) and _has("avx512vl", target)):
        return VNNI256
    if _has("avx2", target):
        return AVX2
    return None


def _desc(lanes: int, a_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vnni_impl(lanes: int):
    """vpdpbusd. LLVM 21 retyped the intrinsic's operands from i32 vectors to byte vectors
    (TVM 0.27's own ``dot_16x4_vnni`` still passes i32 vectors and fails LLVM's verifier with
    the LLVM 22 it ships); both spellings are kept."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    llvm_name = "llvm.x86.avx512.vpdpbusd.512" if lanes == 16 else "llvm.x86.avx512.vpdpbusd.256"
    byte_operands = codegen.llvm_version_major() >= 21
    a_type = f"uint8x{4 * lanes}" if byte_operands else f"int32x{lanes}"
    b_type = f"int8x{4 * lanes}" if byte_operands else f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes), dtype=a_type),
                T.reinterpret(B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=b_type),
                dtype=f"int32x{lanes}",
            )

    return impl


def _word_desc(lanes: int):
    """``lanes`` output channels += the 4 u8 bytes of one int32 word (4 input channels of one
    pixel, broadcast) x each channel's 4 weights."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((1,), "int32", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                with T.sblock("update"):
                    vi = T.axis.remap("S", [i])
                    C[vi] = C[vi] + (
                        ((T.bitwise_and(A[0], 255) * T.Cast("int32", B[vi, 0])
                          + T.bitwise_and(T.shift_right(A[0], 8), 255) * T.Cast("int32", B[vi, 1]))
                         + T.bitwise_and(T.shift_right(A[0], 16), 255) * T.Cast("int32", B[vi, 2]))
                        + T.bitwise_and(T.shift_right(A[0], 24), 255) * T.Cast("int32", B[vi, 3])
                    )

    return desc


def _word_vnni_impl(lanes: int):
    """vpdpbusd: the activation word broadcast to every lane (u8 operand), the weight vector."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    llvm_name = "llvm.x86.avx512.vpdpbusd.512" if lanes == 16 else "llvm.x86.avx512.vpdpbusd.256"
    byte_operands = codegen.llvm_version_major() >= 21
    a_type = f"uint8x{4 * lanes}" if byte_operands else f"int32x{lanes}"
    b_type = f"int8x{4 * lanes}" if byte_operands else f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((1,), "int32", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:1], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(A[0], lanes), dtype=a_type),
                T.reinterpret(B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=b_type),
                dtype=f"int32x{lanes}",
            )

    return impl


def _rows_desc(lanes: int):
    """``lanes`` output pixels += 4 u8 activations (the bytes of one int32 word, see
    :func:`_byte`) x the same 4 weights."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((lanes,), "int32", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes], B[0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                with T.sblock("update"):
                    vi = T.axis.remap("S", [i])
                    C[vi] = C[vi] + (
                        ((T.bitwise_and(A[vi], 255) * T.Cast("int32", B[0])
                          + T.bitwise_and(T.shift_right(A[vi], 8), 255) * T.Cast("int32", B[1]))
                         + T.bitwise_and(T.shift_right(A[vi], 16), 255) * T.Cast("int32", B[2]))
                        + T.bitwise_and(T.shift_right(A[vi], 24), 255) * T.Cast("int32", B[3])
                    )

    return desc


def _rows_vnni_impl(lanes: int):
    """vpdpbusd with the roles of the oc-lanes intrinsic swapped: ``lanes`` output pixels, each
    4 u8 activations (one int32 word; the vector of words is the u8 operand as it is) times
    the same 4 weights (a 32-bit broadcast)."""
    from tvm.target import codegen  # pylint: disable=import-outside-toplevel

    llvm_name = "llvm.x86.avx512.vpdpbusd.512" if lanes == 16 else "llvm.x86.avx512.vpdpbusd.256"
    byte_operands = codegen.llvm_version_major() >= 21
    a_type = f"uint8x{4 * lanes}" if byte_operands else f"int32x{lanes}"
    b_type = f"int8x{4 * lanes}" if byte_operands else f"int32x{lanes}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((lanes,), "int32", offset_factor=1),
        B: T.Buffer((4,), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes], B[0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(A.vload([0], dtype=f"int32x{lanes}"), dtype=a_type),
                T.reinterpret(T.broadcast(T.reinterpret(B.vload([0], "int8x4"), dtype="int32"), lanes), dtype=b_type),
                dtype=f"int32x{lanes}",
            )

    return impl


@T.prim_func(s_tir=True)
def _avx2_sign_impl(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 8), dtype="int8x32")
        # |x| (vpsignb(x, x); |-128| = 0x80 = 128 read as u8) and sign(x) * w (vpsignb(w, x)).
        a_abs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.psign.b"), a, a, dtype="int8x32")
        w_signed = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.psign.b"), B.vload([0, 0], dtype="int8x32"), a, dtype="int8x32"
        )
        pairs = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
            T.reinterpret(a_abs, dtype="uint8x32"), w_signed, dtype="int16x16",
        )
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], dtype="int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs, T.broadcast(T.int16(1), 16), dtype="int32x8"
        )


@functools.cache
def register_intrinsics() -> None:
    """Register the three dot products (once per process; TensorIntrin names are global)."""
    s_tir.TensorIntrin.register(VNNI512.name, _desc(16, "uint8"), _vnni_impl(16), override=True)
    s_tir.TensorIntrin.register(VNNI256.name, _desc(8, "uint8"), _vnni_impl(8), override=True)
    s_tir.TensorIntrin.register(AVX2.name, _desc(8, "int8"), _avx2_sign_impl, override=True)
    s_tir.TensorIntrin.register(ROWS_VNNI512, _rows_desc(16), _rows_vnni_impl(16), override=True)
    s_tir.TensorIntrin.register(VNNI512.name + WORD_SUFFIX, _word_desc(16), _word_vnni_impl(16), override=True)
    s_tir.TensorIntrin.register(VNNI256.name + WORD_SUFFIX, _word_desc(8), _word_vnni_impl(8), override=True)
    s_tir.TensorIntrin.register(ROWS_VNNI256, _rows_desc(8), _rows_vnni_impl(8), override=True)


# -- compile-time weight packing (numpy) --------------------------------------------------------
def pack_conv_weight(w: np.ndarray, lanes: int) -> np.ndarray:
    """OIHW int8 -> [ceil(O/lanes), ceil(I/4), KH, KW, lanes, 4], zero padded."""
    o, i, kh, kw = w.shape
    op, ip = -(-o // lanes) * lanes, -(-i // 4) * 4
    wp = np.zeros((op, ip, kh, kw), np.int8)
    wp[:o, :i] = w
    return np.ascontiguousarray(wp.reshape(op // lanes, lanes, ip // 4, 4, kh, kw).transpose(0, 2, 4, 5, 1, 3))


def pack_conv_weight_rows(w: np.ndarray, rows: int) -> np.ndarray:
    """OIHW int8 -> [O/rows, ceil(I/4), KH, KW, rows, 4] (the ``rows`` weights broadcast in one
    reduction step are adjacent), zero padded."""
    o, i, kh, kw = w.shape
    ip = -(-i // 4) * 4
    wp = np.zeros((o, ip, kh, kw), np.int8)
    wp[:, :i] = w
    return np.ascontiguousarray(wp.reshape(o // rows, rows, ip // 4, 4, kh, kw).transpose(0, 2, 4, 5, 1, 3))


def pack_dense_weight(w: np.ndarray, lanes: int) -> np.ndarray:
    """[K, N] int8 -> [ceil(N/lanes), ceil(K/4), lanes, 4], zero padded."""
    k, n = w.shape
    kp, np_ = -(-k // 4) * 4, -(-n // lanes) * lanes
    wp = np.zeros((kp, np_), np.int8)
    wp[:k, :n] = w
    return np.ascontiguousarray(wp.reshape(kp // 4, 4, np_ // lanes, lanes).transpose(2, 0, 3, 1))


def compensation(w: np.ndarray, out_axis: int, kind: DotKind) -> np.ndarray:
    """-128 * sum(w) per output channel for u8 (x + 128) activations, else zeros (int32)."""
    sums = w.astype(np.int64).sum(axis=tuple(a for a in range(w.ndim) if a != out_axis))
    return (-128 * sums if kind.unsigned else np.zeros_like(sums)).astype(np.int32)


# -- TE kernels ---------------------------------------------------------------------------------
def _to_dot_dtype(value, unsigned: bool):
    """int8 activation as the dot product's A operand: x + 128 as u8, or x unchanged."""
    if not unsigned:
        return value
    return (value.astype("int32") + 128).astype("uint8")


def conv2d_int8(data, weight, comp, strides, padding, dilation, out_channels, reg_n, kind_name: str):
    """NCHW int8 data x packed int8 weight ``[OC/L, IC/4, KH, KW, L, 4]`` -> NCHW int32.

    Blocks: ``data_pack`` (NCHW[4]c, padded, +128 if ``unsigned``), ``conv2d_int8`` (packed
    output ``[N, OC/L, OH, OW rounded to reg_n, L]``, the tensorized block), ``conv2d_int8_out``
    (adds ``comp``, crops to NCHW).
    """
    n, ic, ih, iw = (int(x) for x in data.shape)
    occ, icc, kh, kw, lanes, _ = (int(x) for x in weight.shape)
    sh, sw = strides
    dh, dw = dilation
    pt, pl, pb, pr = padding
    oh, ow = compute.out_hw((ih, iw), (kh, kw), strides, padding, dilation)
    owp = -(-ow // reg_n) * reg_n
    hp = ih + pt + pb
    wp = max(iw + pl + pr, (owp - 1) * sw + (kw - 1) * dw + 1)
    kind = DOT_KINDS[kind_name]
    unsigned = kind.unsigned
    dtype = "uint8" if unsigned else "int8"
    zero = tirx.const(128 if unsigned else 0, dtype)

    def _pack(b, c, y, x, c4):
        ch, yy, xx = c * 4 + c4, y - pt, x - pl
        inside = tirx.all(ch < ic, yy >= 0, yy < ih, xx >= 0, xx < iw)
        return tirx.if_then_else(inside, _to_dot_dtype(data[b, ch, yy, xx], unsigned), zero)

    rc = te.reduce_axis((0, icc), "rc")
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    attrs = {"schedule_rule": CONV2D_INT8, "accelc.reg_n": reg_n, "accelc.intrin": kind.name}
    if unsigned:  # VNNI: 4-channel int32 words (see _word), the vector of words as the u8 operand
        words = te.compute((n, icc, hp, wp), lambda b, c, y, x: _word(data, b, c, y - pt, x - pl, (-pl, wp - 1 - pl)),
                           name="data_pack")
        conv = te.compute(
            (n, occ, oh, owp, lanes),
            lambda b, o, y, x, ov: te.sum(
                _dot4(words[b, rc, y * sh + rh * dh, x * sw + rw * dw], lambda k: weight[o, rc, rh, rw, ov, k]),
                axis=[rc, rh, rw],
            ),
            name="conv2d_int8",
            attrs={**attrs, "accelc.intrin": kind.name + WORD_SUFFIX},
        )
        return te.compute(
            (n, out_channels, oh, ow),
            lambda b, o, y, x: conv[b, o // lanes, y, x, o % lanes] + comp[o],
            name="conv2d_int8_out",
        )
    data_pack = te.compute((n, icc, hp, wp, 4), _pack, name="data_pack")
    r4 = te.reduce_axis((0, 4), "r4")
    conv = te.compute(
        (n, occ, oh, owp, lanes),
        lambda b, o, y, x, ov: te.sum(
            data_pack[b, rc, y * sh + rh * dh, x * sw + rw * dw, r4].astype("int32")
            * weight[o, rc, rh, rw, ov, r4].astype("int32"),
            axis=[rc, rh, rw, r4],
        ),
        name="conv2d_int8",
        attrs=attrs,
    )
    return te.compute(
        (n, out_channels, oh, ow),
        lambda b, o, y, x: conv[b, o // lanes, y, x, o % lanes] + comp[o],
        name="conv2d_int8_out",
    )


def _load_or_zero(data, b, ch, y, x, x_span):
    """int8 ``data[b, ch, y, x]`` as int32, 0 outside the tensor (padding), written so that
    TVM vectorizes it along ``x``.

    TVM's vectorizer scalarizes a whole loop as soon as an ``if_then_else`` condition varies
    along the vector (a padded column); a ``Select`` vectorizes, but evaluates its load
    unconditionally. So the row (uniform along the vector) is clamped and tested with
    if_then_else, and the column with a Select around a load at the unclamped column: a column
    off the row's end reads a neighbouring row of the same tensor, which the Select discards.
    ``x_span = (lowest, highest)`` column any lane of the loop reads: a row whose reads could
    leave the buffer (the first/last rows of the tensor, more of them when the row is shorter
    than the vector) clamps the column too (a gather, on a few rows only)."""
    n, c, ih, iw = (int(v) for v in data.shape)
    yc = tirx.max(tirx.min(y, ih - 1), 0)
    start = ((b * c + ch) * ih + yc) * iw  # flat index of the row
    edge = tirx.any(start + x_span[0] < 0, start + x_span[1] >= n * c * ih * iw)
    xc = tirx.max(tirx.min(x, iw - 1), 0)
    value = tirx.if_then_else(edge, data[b, ch, yc, xc], data[b, ch, yc, x]).astype("int32")
    value = tirx.Select(tirx.all(x >= 0, x < iw), value, tirx.const(0, "int32"))
    return tirx.if_then_else(tirx.all(y >= 0, y < ih, ch < c), value, tirx.const(0, "int32"))


def _word(data, b, c, y, x, x_span):
    """Input channels ``4c..4c+3`` of pixel (y, x) as the 4 bytes of one int32 word, each
    ``x + 128`` (u8; 128 in the padding and past the last channel). Built with shifts and ors
    on int32 vectors (vpmovsxbd + vpslld + vpord per 16 pixels): the packing block is as fast
    as a copy, where a byte-interleaving ``[..., 4]`` block stores strided bytes one by one."""
    word = None
    for i in range(4):
        value = _load_or_zero(data, b, c * 4 + i, y, x, x_span)
        if i < 3:  # (x + 128) & 255
            byte = tirx.bitwise_and(value + 128, 255)
        else:  # the top byte sign-extended, so that no constant overflows int32: x ^ -128
            byte = tirx.bitwise_xor(value, -128)
        word = byte if word is None else tirx.bitwise_or(word, tirx.shift_left(byte, 8 * i))
    return word


def _pair_word(data, b, c, y, pair, odd, x_span):
    """:func:`_word` from int16 column pairs: byte ``odd`` of ``data[b, 4c + i, y, pair]``
    (``odd`` uniform along the vector), so that a stride-2 pack reads contiguous vectors."""
    word = None
    for i in range(4):
        value = _load_or_zero(data, b, c * 4 + i, y, pair, x_span)  # the pair, sign-extended; 0 outside
        raw = tirx.bitwise_and(tirx.Select(odd, tirx.shift_right(value, 8), value), 255)
        if i < 3:
            byte = tirx.shift_left(tirx.bitwise_xor(raw, 128), 8 * i) if i else tirx.bitwise_xor(raw, 128)
        else:  # (raw ^ 128) << 24 with no int32 constant overflow (padding folds raw to 0)
            byte = tirx.bitwise_xor(tirx.shift_left(raw, 24), tirx.const(-(2**31), "int32"))
        word = byte if word is None else tirx.bitwise_or(word, byte)
    return word


def _dot4(word, weight_at):
    """sum_k byte_k(word) * weight_at(k) over the 4 u8 bytes of an int32 word: one reduction
    step of a vpdpbusd, which reads the word vector as its u8 operand as it is (the reduction
    over the 4 bytes is unrolled so that no loop variable appears inside the expression)."""
    total = None
    for k in range(4):
        byte = tirx.bitwise_and(tirx.shift_right(word, 8 * k) if k else word, 255)
        term = byte * weight_at(k).astype("int32")
        total = term if total is None else total + term
    return total


def conv2d_int8_rows(data, weight, comp, strides, padding, dilation, lanes: int):
    """NCHW int8 data x packed int8 weight ``[O/R, IC/4, KH, KW, R, 4]`` -> NCHW int32, with
    output *pixels* on the vector lanes (VNNI only: u8 activations, + compensation).

    ``data_pack[n, c/4, y, phase, xq]`` (int32 words of 4 channels, see :func:`_word`) holds
    input column ``xq * sw + phase`` (+128, padded): the ``lanes`` pixels ``x..x+lanes`` of one
    output row read, for every kernel tap, one contiguous vector
    ``data_pack[n, c, y*sh + kh*dh, (kw*dw) % sw, x + (kw*dw) // sw]`` whatever the stride. The
    output row is computed up to a multiple of ``lanes`` and cropped. ``data`` may be the int16
    column-pair view of the int8 input (stride 2, even width).
    """
    n, ic, ih, iw = (int(x) for x in data.shape)
    iw *= 2 if str(data.dtype) == "int16" else 1
    ocr, icc, kh, kw, rows, _ = (int(x) for x in weight.shape)
    sh, sw = strides
    dh, dw = dilation
    pt, pl, _, _ = padding
    oh, ow = compute.out_hw((ih, iw), (kh, kw), strides, padding, dilation)
    owp = -(-ow // lanes) * lanes
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wq = owp + (kw - 1) * dw // sw

    pairs = str(data.dtype) == "int16"  # stride 2: int16 column pairs (see LegalizeInt8Ops)

    def _pack(b, c, y, ph, xq):
        if not pairs:
            return _word(data, b, c, y - pt, xq * sw + ph - pl, (-pl, wq * sw - 1 - pl))
        # column xq * 2 + ph - pl is byte (ph - pl) % 2 of pair xq + (ph - pl) // 2
        return _pair_word(data, b, c, y - pt, xq + tirx.floordiv(ph - pl, 2), tirx.floormod(ph - pl, 2) == 1,
                          (-pl // 2, wq - 1 + (sw - 1 - pl) // 2))

    data_pack = te.compute((n, icc, hp, sw, wq), _pack, name="data_pack")
    rc = te.reduce_axis((0, icc), "rc")
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    conv = te.compute(
        (n, ocr * rows, oh, owp),
        lambda b, o, y, x: te.sum(
            _dot4(data_pack[b, rc, y * sh + rh * dh, (rw * dw) % sw, x + (rw * dw) // sw],
                  lambda k: weight[o // rows, rc, rh, rw, o % rows, k]),
            axis=[rc, rh, rw],
        ),
        name="conv2d_int8_rows",
        attrs={"schedule_rule": CONV2D_INT8_ROWS, "accelc.rows": rows, "accelc.lanes": lanes},
    )
    return te.compute(
        (n, ocr * rows, oh, ow), lambda b, o, y, x: conv[b, o, y, x] + comp[o], name="conv2d_int8_rows_out"
    )


def depthwise_conv2d_int8_words(data, weight, comp, strides, padding, kw: int, lanes: int):
    """Depthwise (multiplier 1, KW <= 3, no dilation) NCHW int8 conv on vpdpbusd, output pixels
    on the lanes: the KW taps of one kernel row are the bytes of one int32 word.

    ``word[n, c, yy, x]`` holds input row ``yy - pt``, columns ``x * sw - pl .. + KW - 1`` (each
    ``x + 128`` as u8, padding 128; the unused top byte 0), built with shifts and ors on int32
    vectors; the weight ``[C, KH, 4]`` holds each kernel row's taps in the same bytes (zero
    padded). Output row ``y`` is then KH vpdpbusd per ``lanes`` pixels,
    ``sum_kh dot4(word[.., y * sh + kh, x], weight[c, kh])``, plus ``comp[c] = -128 * sum(w[c])``
    for the u8 offset: a third of the instructions of a multiply-add per tap. The row is
    computed up to whole vectors and cropped.
    """
    n, c, ih, iw = (int(x) for x in data.shape)
    _, kh, _ = (int(x) for x in weight.shape)
    sh, sw = strides
    pt, pl, _, _ = padding
    if str(data.dtype) == "int16":  # stride 2: int16 column pairs (see LegalizeInt8Ops)
        iw *= 2
    oh, ow = compute.out_hw((ih, iw), (kh, kw), strides, padding, (1, 1))
    owp = -(-ow // lanes) * lanes
    hp = (oh - 1) * sh + kh

    def _word(b, ch, yy, x, width):  # the taps of input column x (stride 1), x in [0, width)
        y_in = yy - pt
        word = None
        for j in range(kw):
            byte = tirx.bitwise_and(
                _load_or_zero(data, b, ch, y_in, x + j - pl, (-pl, width + kw - 2 - pl)) + 128, 255)  # 0 -> 128
            word = byte if word is None else tirx.bitwise_or(word, tirx.shift_left(byte, 8 * j))
        return word

    def _pair_word(b, ch, yy, x):  # stride 2, data as int16 pairs: column col is byte col % 2 of pair col // 2
        word = None
        for j in range(kw):
            pair = _load_or_zero(data, b, ch, yy - pt, x + (j - pl) // 2, (-pl // 2, owp - 1 + (kw - 1 - pl) // 2))
            raw = tirx.bitwise_and(tirx.shift_right(pair, 8) if (j - pl) % 2 else pair, 255)
            byte = tirx.bitwise_xor(raw, 128)  # int8 x -> u8 x + 128 (padding 0 -> 128)
            word = byte if word is None else tirx.bitwise_or(word, tirx.shift_left(byte, 8 * j))
        return word

    if sw == 1:
        words = te.compute((n, c, hp, owp), lambda b, ch, yy, x: _word(b, ch, yy, x, owp), name="data_pack")
    elif str(data.dtype) == "int16":
        words = te.compute((n, c, hp, owp), _pair_word, name="data_pack")
    else:  # strided byte loads do not vectorize: words at every column, then every sw-th word
        dense = te.compute(  # whole vectors
            (n, c, hp, owp * sw), lambda b, ch, yy, x: _word(b, ch, yy, x, owp * sw), name="data_pack")
        words = te.compute((n, c, hp, owp), lambda b, ch, yy, x: dense[b, ch, yy, x * sw], name="data_pack_strided")
    rh = te.reduce_axis((0, kh), "rh")
    conv = te.compute(
        (n, c, oh, owp),
        lambda b, o, y, x: te.sum(_dot4(words[b, o, y * sh + rh, x], lambda k: weight[o, rh, k]), axis=[rh]),
        name="depthwise_conv2d_int8_words",
        attrs={"schedule_rule": DEPTHWISE_INT8_WORDS, "accelc.lanes": lanes},
    )
    return te.compute((n, c, oh, ow), lambda b, o, y, x: conv[b, o, y, x] + comp[o], name="depthwise_conv2d_int8_out")


def depthwise_conv2d_int8_lanes(data, weight, strides, padding, dilation, lanes: int):
    """Depthwise (multiplier 1) NCHW int8 conv, output pixels on the vector lanes, exact int32
    multiply-adds (no dot-product instruction fits a 9-tap per-channel reduction).

    ``data_pack[n, c, y, phase, xq]`` holds input column ``xq * sw + phase`` (zero padded), so
    each tap reads ``lanes`` contiguous bytes ``data_pack[n, c, y*sh + kh*dh, (kw*dw) % sw,
    x + (kw*dw) // sw]`` whatever the stride; the row is computed up to whole vectors and cropped.
    """
    n, c, ih, iw = (int(x) for x in data.shape)
    _, kh, kw = (int(x) for x in weight.shape)
    sh, sw = strides
    dh, dw = dilation
    pt, pl, _, _ = padding
    oh, ow = compute.out_hw((ih, iw), (kh, kw), strides, padding, dilation)
    owp = -(-ow // lanes) * lanes
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wq = -(-(owp + (kw - 1) * dw // sw) // lanes) * lanes  # whole vectors: the pack vectorizes

    def _pack(b, ch, y, ph, xq):
        yy, xx = y - pt, xq * sw + ph - pl
        inside = tirx.all(yy >= 0, yy < ih, xx >= 0, xx < iw)
        return tirx.if_then_else(inside, data[b, ch, yy, xx], tirx.const(0, "int8"))

    data_pack = te.compute((n, c, hp, sw, wq), _pack, name="data_pack")
    rh = te.reduce_axis((0, kh), "rh")
    rw = te.reduce_axis((0, kw), "rw")
    conv = te.compute(
        (n, c, oh, owp),
        lambda b, o, y, x: te.sum(
            data_pack[b, o, y * sh + rh * dh, (rw * dw) % sw, x + (rw * dw) // sw].astype("int32")
            * weight[o, rh, rw].astype("int32"),
            axis=[rh, rw],
        ),
        name="depthwise_conv2d_int8_lanes",
        attrs={"schedule_rule": DEPTHWISE_INT8_LANES, "accelc.lanes": lanes},
    )
    return te.compute((n, c, oh, ow), lambda b, o, y, x: conv[b, o, y, x], name="depthwise_conv2d_int8_out")


def dense_int8(data, weight, comp, n_valid, kind_name: str):
    """[M, K] int8 x packed int8 ``[N/L, K/4, L, 4]`` -> [M, N] int32."""
    m, k = (int(x) for x in data.shape)
    npanels, kc, lanes, _ = (int(x) for x in weight.shape)
    kind = DOT_KINDS[kind_name]
    unsigned = kind.unsigned
    dtype = "uint8" if unsigned else "int8"
    zero = tirx.const(128 if unsigned else 0, dtype)
    data_pack = te.compute(
        (m, kc, 4),
        lambda i, c, c4: tirx.if_then_else(c * 4 + c4 < k, _to_dot_dtype(data[i, c * 4 + c4], unsigned), zero),
        name="data_pack",
    )
    rc = te.reduce_axis((0, kc), "rc")
    r4 = te.reduce_axis((0, 4), "r4")
    dense = te.compute(
        (m, npanels, lanes),
        lambda i, p, l: te.sum(
            data_pack[i, rc, r4].astype("int32") * weight[p, rc, l, r4].astype("int32"), axis=[rc, r4]
        ),
        name="dense_int8",
        attrs={"schedule_rule": DENSE_INT8, "accelc.intrin": kind.name},
    )
    return te.compute((m, n_valid), lambda i, j: dense[i, j // lanes, j % lanes] + comp[j], name="dense_int8_out")


def _multiply_widened(x, m):
    """int64 x times the int32 m widened to int64 (numpy broadcasting)."""
    return topi.multiply(x, topi.cast(m, "int64"))


# -- Relax legalization ------------------------------------------------------------------------
def _int8_const(expr) -> np.ndarray | None:
    if isinstance(expr, Constant) and str(expr.ty.dtype) == "int8":
        return expr.value.numpy()
    return None


@tvm.transform.module_pass(opt_level=0, name="LegalizeInt8Ops")
class LegalizeInt8Ops:  # pylint: disable=too-few-public-methods
    """Lower int8 x int8-constant -> int32 ``conv2d`` (NCHW/OIHW, dense or depthwise) and
    2-D ``matmul`` to the kernels above, with weights packed (and the u8 compensation computed)
    in numpy.

    Runs in the CPU layout passes (before LegalizeOps). A call failing a guard is left for
    LegalizeOps (generic kernel): non-constant weights, dynamic shapes, grouped non-depthwise
    conv, no int8 dot product on the target, or a -128 weight on the AVX2 sign path.
    Also rewrites the requantize's ``int64(acc_int32) * M`` (M an int64 constant that fits
    int32) to widen M inside the kernel (``multiply_32x32``: vpmuldq once fused).
    ``rewrites`` counts each kernel after the run.
    """

    def __init__(self, target: Target, config: CpuScheduleConfig | None = None):
        self.target = target
        self.config = config or config_from_target(target)
        self.rewrites: dict[str, int] = {}

    def transform_module(self, mod: IRModule, _ctx) -> IRModule:
        kind = dot_kind(self.target)
        if kind is None:
            self.rewrites = {}
            return mod
        rewriter = _Int8Rewriter(mod, self.config, kind)
        for g_var, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(g_var, rewriter.visit_expr(func))
        self.rewrites = dict(rewriter.rewrites)
        return rewriter.builder_.get()


@mutator
class _Int8Rewriter(PyExprMutator):  # pylint: disable=abstract-method
    def __init__(self, mod, config: CpuScheduleConfig, kind: DotKind):
        super().__init__(mod)
        self.config = config
        self.kind = kind
        self.rewrites: dict[str, int] = {}

    def _count(self, name):
        self.rewrites[name] = self.rewrites.get(name, 0) + 1

    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.multiply":
            lowered = self._multiply_32x32(call)
            return call if lowered is None else lowered
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.nn.max_pool2d":
            lowered = self._padded_max_pool(call)
            return call if lowered is None else lowered
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        if str(call.attrs.out_dtype) != "int32":
            return call
        lowered = None
        if call.op.name == "relax.nn.conv2d":
            lowered = self._conv2d(call)
        elif call.op.name == "relax.matmul":
            lowered = self._matmul(call)
        return call if lowered is None else lowered

    def _multiply_32x32(self, call):
        """int64(x_int32) * M (int64 constant whose values fit int32: the requantize's
        fixed-point multiplier) -> the same product with M held as int32 and widened inside
        the kernel. Once fused into the conv epilogue, LLVM sees a product of two sign-extended
        32-bit values and emits one ``vpmuldq`` per 8 lanes instead of ``vpmullq`` (3 uops);
        a plain int64 constant would be folded back by FoldConstant."""
        x, m = call.args
        m_value = m.value.numpy() if isinstance(m, Constant) else None
        if m_value is None or str(m.ty.dtype) != "int64" or not isinstance(x, relax.Var):
            return None
        if m_value.size and (m_value.min() < -(2**31) or m_value.max() >= 2**31):
            return None
        widened = self.lookup_binding(x)
        if not (isinstance(widened, relax.Call) and isinstance(widened.op, tvm.ir.Op)
                and widened.op.name == "relax.astype" and str(widened.args[0].ty.dtype) == "int32"):
            return None
        if static_shape(x) is None:
            return None
        self._count("multiply_32x32")
        return self.builder_.call_te(
            _multiply_widened, x, relax.const(m_value.astype(np.int32)), primfunc_name_hint="multiply"
        )

    def _padded_max_pool(self, call):
        """int8 max_pool2d with padding -> pad with -128, then the pool without padding.

        TOPI's pool tests every tap against the border (an ``if_then_else`` per element
        that keeps the kernel scalar: ResNet-50's int8 3x3/2 pool took 1.4 ms, 6% of the
        model); padded first, the pool's row loop vectorizes (GenericCpu). Exact: -128 is the
        identity of max on int8."""
        attrs = call.attrs
        x = call.args[0]
        pads = [int(p) for p in attrs.padding]
        if (str(x.ty.dtype) != "int8" or str(attrs.layout) != "NCHW" or not any(pads) or bool(attrs.ceil_mode)
                or static_shape(x) is None or len(pads) != 4):
            return None
        top, left, bottom, right = pads
        padded = self.builder_.emit(relax.op.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right], pad_value=-128.0))
        self._count("max_pool2d_padded")
        return relax.op.nn.max_pool2d(padded, attrs.pool_size, attrs.strides, 0, attrs.dilation, False,
                                      bool(attrs.count_include_pad), "NCHW", attrs.out_layout)

    def _usable(self, w: np.ndarray) -> bool:
        # the AVX2 sign trick needs |w| <= 127 (see the module docstring)
        return self.kind.unsigned or int(w.min()) > -128

    def _conv2d(self, call):
        a = call.attrs
        data, weight = call.args
        w = _int8_const(weight)
        dshape = static_shape(data)
        if w is None or dshape is None or data.ty.dtype != "int8" or len(dshape) != 4 or not self._usable(w):
            return None
        if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or a.out_layout not in ("NCHW", ""):
            return None
        strides = [int(s) for s in a.strides]
        dilation = [int(d) for d in a.dilation]
        padding = [int(p) for p in a.padding]
        groups = int(a.groups)
        oc = w.shape[0]
        oh, ow = compute.out_hw(dshape[2:], w.shape[2:], strides, padding, dilation)
        if groups == 1 and self.kind.unsigned:
            rows_lanes = self._rows_layout(oc, ow, depth=int(np.prod(w.shape[1:])))
            if rows_lanes is not None:
                rows, lanes = rows_lanes
                self._count("conv2d_int8_rows")
                if strides[1] == 2 and dilation[1] == 1 and dshape[3] % 2 == 0:
                    data = self._column_pairs(data, dshape)
                return self.builder_.call_te(
                    conv2d_int8_rows, data, relax.const(pack_conv_weight_rows(w, rows)),
                    relax.const(compensation(w, 0, self.kind)), strides, padding, dilation, lanes,
                    primfunc_name_hint="conv2d_int8",
                )
        if groups == 1:
            lanes = self.kind.lanes
            reg_n = self.config.conv_reg_n(ow, self.config.vector_lanes)
            packed = relax.const(pack_conv_weight(w, lanes))
            comp = relax.const(compensation(w, 0, self.kind))
            self._count("conv2d_int8")
            return self.builder_.call_te(
                conv2d_int8, data, packed, comp, strides, padding, dilation, oc, reg_n, self.kind.name,
                primfunc_name_hint="conv2d_int8",
            )
        if groups == dshape[1] == oc and w.shape[1] == 1:
            lanes = self.config.vector_lanes
            if ow <= lanes // 2:
                lanes //= 2
            if self.kind.unsigned and self.kind.lanes == 16 and w.shape[3] <= 3 and dilation == [1, 1]:
                # the KW taps of a kernel row as the bytes of one vpdpbusd word
                wq = np.zeros((oc, w.shape[2], 4), np.int8)
                wq[:, :, : w.shape[3]] = w[:, 0]
                self._count("depthwise_conv2d_int8_words")
                if strides[1] == 2 and dshape[3] % 2 == 0:
                    data = self._column_pairs(data, dshape)
                return self.builder_.call_te(
                    depthwise_conv2d_int8_words, data, relax.const(wq), relax.const(compensation(w, 0, self.kind)),
                    strides, padding, int(w.shape[3]), lanes, primfunc_name_hint="depthwise_conv2d_int8",
                )
            self._count("depthwise_conv2d_int8")
            return self.builder_.call_te(
                depthwise_conv2d_int8_lanes, data, relax.const(np.ascontiguousarray(w[:, 0])), strides, padding,
                dilation, lanes, primfunc_name_hint="depthwise_conv2d_int8",
            )
        return None

    def _column_pairs(self, data, dshape):
        """The int8 NCHW input as int16 column pairs (a view, no copy): a stride-2 kernel's
        pack then reads contiguous vectors rather than every other byte (a gather)."""
        return self.builder_.emit(relax.op.memory.view(data, [*dshape[:3], dshape[3] // 2], "int16"))

    def _rows_layout(self, oc: int, ow: int, depth: int) -> tuple[int, int] | None:
        """(rows, lanes) of the pixel-lanes kernel, or None to put output channels on lanes.

        Pixels on lanes keeps the epilogue (compensation, bias, requantize) vectorized along
        NCHW rows with contiguous stores, where the channel-lanes tile must be transposed on
        the way out; it pays unless padding the row to whole vectors wastes too much (rows of
        7 use 8-lane ymm). ``rows`` divides ``oc`` and keeps ``rows * vectors`` accumulators.
        Deep reductions (``depth`` = IC*KH*KW >= 512) on short rows keep full-width zmm with
        channels on lanes: there the transposed epilogue is amortized over the reduction."""
        lanes = self.kind.lanes
        if ow <= 8 and lanes == 16:
            if depth >= 512:
                return None
            lanes = 8
        owp = -(-ow // lanes) * lanes
        if owp > ow * 1.25:
            return None
        budget = max(1, self.config.conv_max_accum // (owp // lanes))
        if depth < SHALLOW_DEPTH:
            # rows * owp int32 accumulators: under 1 KiB the tile lives on the stack (TVM serves
            # larger per-tile buffers with a workspace alloc/free call pair per tile, which a
            # shallow reduction does not amortize; a deep one keeps the larger register tile)
            budget = max(1, min(budget, (STACK_TILE_BYTES - 1) // (4 * owp)))
        rows = max(r for r in range(1, min(budget, oc) + 1) if oc % r == 0)
        if rows < min(2, budget):
            return None
        return rows, lanes

    def _matmul(self, call):
        data, weight = call.args
        w = _int8_const(weight)
        dshape = static_shape(data)
        if w is None or w.ndim != 2 or dshape is None or len(dshape) < 2 or data.ty.dtype != "int8":
            return None
        if not self._usable(w):
            return None
        k, n = w.shape
        rows = int(np.prod(dshape[:-1]))
        flat = data if len(dshape) == 2 else self.builder_.emit(relax.op.reshape(data, [rows, k]))
        packed = relax.const(pack_dense_weight(w, self.kind.lanes))
        comp = relax.const(compensation(w, 1, self.kind))
        self._count("dense_int8")
        out = self.builder_.call_te(
            dense_int8, flat, packed, comp, n, self.kind.name, primfunc_name_hint="dense_int8"
        )
        if len(dshape) == 2:
            return out
        return relax.op.reshape(self.builder_.emit(out), [*dshape[:-1], n])


# -- schedule rules ----------------------------------------------------------------------------
def _on_stack(sch, block) -> None:
    """Give the register tile's buffer global scope: TVM's LowerTVMBuiltin puts small *global*
    CPU allocations on the stack but serves every "local" one with a TVMBackendAllocWorkspace /
    FreeWorkspace call pair, inside the parallel loop: once per tile (per output row of a
    depthwise layer). LLVM then keeps the stack tile in registers."""
    sch.set_scope(block, 0, "global")  # place_epilogue left it "local" on every path


def _intrin_for(sch, block) -> str:
    """The TensorIntrin the kernel was built for (block annotation ``accelc.intrin``)."""
    return str(sch.get(block).annotations["accelc.intrin"])


class Conv2dInt8(CpuRule):
    """conv2d_int8 + fused epilogue (compensation, bias, relu, requantize, crop to NCHW).

    Tile: ``reg_n`` output pixels of one row x ``lanes`` output channels, ``reg_n``
    accumulator registers over the whole reduction (input-channel quads, kh, kw); the inner
    step is one 4-byte activation broadcast and one tensorized dot (vpdpbusd, or the AVX2
    sequence) per pixel, the weight vector shared by the ``reg_n`` pixels. (batch, oc block,
    row) are fused and parallel; the epilogue runs on the tile before it is stored.
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        conv = find_rule_block(sch, CONV2D_INT8)
        if conv is None:
            return None
        register_intrinsics()
        config = self.config_for(target)
        reg_n = int(sch.get(conv).annotations["accelc.reg_n"])
        kind = _intrin_for(sch, conv)
        for block in producers_before(sch, conv):
            schedule_injective(sch, block, config)
        n, oc, oh, ow, ob, rc, rh, rw, *r4 = sch.get_loops(conv)  # no r4 loop on words
        xo, xi = sch.split(ow, [None, reg_n])
        sch.reorder(n, oc, oh, xo, rc, rh, rw, xi, ob, *r4)
        outer = sch.fuse(n, oc, oh)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch, _ = place_epilogue(sch, conv, xo, config)
        _on_stack(sch, conv)
        init = sch.decompose_reduction(conv, rc)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        sch.unroll(init_loops[-2])
        sch.tensorize(ob, kind)
        sch.unroll(xi)
        sch.unroll(rw)
        return sch


class Conv2dInt8Rows(CpuRule):
    """conv2d_int8_rows + fused epilogue.

    Tile: ``rows`` output channels x one whole output row (``owp / lanes`` vectors of pixels),
    ``rows * owp / lanes`` accumulators over the reduction (input-channel quads, kh, kw); each
    step loads ``owp / lanes`` activation vectors and issues ``rows`` weight broadcasts x that
    many vpdpbusd. (batch, channel tile, row) are fused and parallel; the epilogue runs along
    the row (contiguous NCHW stores).
    """

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        conv = find_rule_block(sch, CONV2D_INT8_ROWS)
        if conv is None:
            return None
        register_intrinsics()
        config = self.config_for(target)
        ann = sch.get(conv).annotations
        rows, lanes = int(ann["accelc.rows"]), int(ann["accelc.lanes"])
        for block in producers_before(sch, conv):
            schedule_injective(sch, block, config)
        n, o, y, x, *reduce = sch.get_loops(conv)  # rc, rh, rw (the 4 bytes are one word)
        oo, oi = sch.split(o, [None, rows])
        xv, xi = sch.split(x, [None, lanes])
        sch.reorder(n, oo, y, *reduce, oi, xv, xi)
        outer = sch.fuse(n, oo, y)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch, _ = place_epilogue(sch, conv, outer, config)
        _on_stack(sch, conv)
        init = sch.decompose_reduction(conv, reduce[0])
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        for loop in init_loops[1:-1]:
            sch.unroll(loop)
        sch.tensorize(xi, ROWS_VNNI512 if lanes == 16 else ROWS_VNNI256)
        sch.unroll(oi)
        sch.unroll(xv)
        return sch


class DepthwiseInt8Lanes(CpuRule):
    """depthwise_conv2d_int8_lanes + fused epilogue. Tile: one channel x one output row
    (``owp / lanes`` int32 vectors), the KH*KW taps unrolled around it: per tap, contiguous
    byte loads widened to int32, one multiply by the broadcast weight, one add. (batch,
    channel, row) fused and parallel; the epilogue runs along the row.
    Also schedules depthwise_conv2d_int8_words (:meth:`_words`): (batch, channel) parallel, the
    channel's tap words packed first, then each row as KH tensorized vpdpbusd per vector."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        conv = find_rule_block(sch, DEPTHWISE_INT8_LANES)
        if conv is None:
            return self._words(sch, target)
        config = self.config_for(target)
        lanes = int(sch.get(conv).annotations["accelc.lanes"])
        for block in producers_before(sch, conv):
            schedule_injective(sch, block, config)
        n, c, y, x, rh, rw = sch.get_loops(conv)
        xv, xi = sch.split(x, [None, lanes])
        sch.reorder(n, c, y, rh, rw, xv, xi)
        outer = sch.fuse(n, c, y)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch.unroll(rh)
        sch.unroll(rw)
        sch.unroll(xv)
        sch.vectorize(xi)
        sch, _ = place_epilogue(sch, conv, outer, config)
        _on_stack(sch, conv)
        init = sch.decompose_reduction(conv, rh)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        for loop in init_loops[1:-1]:
            sch.unroll(loop)
        return sch


    def _words(self, sch, target):
        """depthwise_conv2d_int8_words: the same tile, KH tensorized vpdpbusd per vector."""
        conv = find_rule_block(sch, DEPTHWISE_INT8_WORDS)
        if conv is None:
            return None
        register_intrinsics()
        config = self.config_for(target)
        lanes = int(sch.get(conv).annotations["accelc.lanes"])
        n, c, y, x, rh = sch.get_loops(conv)
        xv, xi = sch.split(x, [None, lanes])
        sch.reorder(n, c, y, rh, xv, xi)
        channel = sch.fuse(n, c)
        if config.num_cores > 1:
            sch.parallel(channel)
        # The words of one channel (4x its input bytes) are built right before its rows use
        # them: the whole layer's words would fall out of L2 on the 112x112 layers.
        for block in reversed(producers_before(sch, conv)):
            sch.compute_at(block, channel)
            *_, inner = sch.get_loops(block)
            _, vec = sch.split(inner, [None, lanes])
            sch.vectorize(vec)
        sch, _ = place_epilogue(sch, conv, y, config)
        _on_stack(sch, conv)
        init = sch.decompose_reduction(conv, rh)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        for loop in init_loops[2:-1]:  # (channel, row, vectors, lanes)
            sch.unroll(loop)
        sch.tensorize(xi, ROWS_VNNI512 if lanes == 16 else ROWS_VNNI256)
        sch.unroll(rh)
        sch.unroll(xv)
        return sch


class DenseInt8(CpuRule):
    """dense_int8 + fused epilogue. Tile: ``rows`` rows x one ``lanes``-wide weight panel,
    ``rows`` accumulators over K; per 4-deep K step one broadcast per row and one dot."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        dense = find_rule_block(sch, DENSE_INT8)
        if dense is None:
            return None
        register_intrinsics()
        config = self.config_for(target)
        kind = _intrin_for(sch, dense)
        for block in producers_before(sch, dense):
            schedule_injective(sch, block, config)
        m, p, lane, rc, r4 = sch.get_loops(dense)
        m_ext = loop_extent(sch, m)
        rows = max(r for r in range(1, min(m_ext, config.dense_max_accum) + 1) if m_ext % r == 0)
        mo, mi = sch.split(m, [None, rows])
        sch.reorder(p, mo, rc, mi, lane, r4)
        outer = sch.fuse(p, mo)
        if config.num_cores > 1:
            sch.parallel(outer)
        sch, _ = place_epilogue(sch, dense, outer, config)
        _on_stack(sch, dense)
        init = sch.decompose_reduction(dense, rc)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        sch.tensorize(lane, kind)
        sch.unroll(mi)
        return sch
