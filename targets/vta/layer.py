"""One int8 layer on VTA: spec, numpy reference, compile to a self-contained program, run.

The arithmetic is exactly what accelc's CPU int8 graph computes in ``--requantize shift`` mode
(``passes/quantize_realize.py::_requantize``, ``accelc/quantize/fixed_point.py``)::

    acc = sum int8 * int8 (int32)  [+ bias int32 per output channel]
    if relu: acc = max(acc, 0)
    y = clip((acc + half(shift)) >> shift, -128, 127).astype(int8),  half(s) = 1 << (s-1) if s > 0 else 0

The CPU shifts in int64; VTA's accumulator is int32, so ``bias + half(shift)`` is folded into
one per-channel constant added with the ALU. The two agree unless ``acc + bias + half`` leaves
int32, which :func:`compile_layer` rules out per channel from the weights
(``|acc| <= 128 * sum |w|``) and otherwise refuses with a :class:`VTAError`. In practice
it needs shifts near 31 or biases near 2^31. Relu runs after the shift (``max(., 0)``
instead of ``max(., -128)``), which is the same function because ``half(s) < 2^s``.

Layouts: ``x`` NCHW (dense ``(N, IC)``), ``weight`` OIHW (dense ``(OC, IC)``), output NCHW
(dense ``(N, OC)``), all int8. Packing to VTA's blocked layouts happens here in numpy, with
channels and batch zero-padded to whole blocks; spatial padding is done by the LOAD
instruction. A :class:`CompiledLayer` carries the instruction stream and the DRAM image
(weights, constants, micro-ops; input and output regions zeroed), so ``to_bytes`` is all a
runtime needs.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from accelc.errors import InputMismatchError
from accelc.quantize.fixed_point import rounding_half

from .config import VTAConfig, VTAError
from .isa import AnyInsn, MemType, decode_program, encode_program
from .lower import DramBases, lower
from .planner import Problem, TilePlan, check_layer, default_plan
from .simulator import DramImage, SimStats, Simulator

KINDS = ("conv2d", "dense")
_MAGIC = b"ACVTALYR"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LayerSpec:
    """One int8 layer, batch-major; conv2d NCHW/OIHW, dense ``(N, IC) x (OC, IC)``."""

    kind: str
    batch: int
    in_channels: int
    out_channels: int
    height: int = 1
    width: int = 1
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    relu: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise VTAError(f"layer kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("kernel", "stride", "padding"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        ints = {"batch": self.batch, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "height": self.height, "width": self.width}
        for name, v in ints.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise VTAError(f"LayerSpec.{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        object.__setattr__(self, "relu", bool(self.relu))
        if len(self.kernel) != 2 or len(self.stride) != 2 or len(self.padding) != 4:
            raise VTAError("LayerSpec: kernel and stride take 2 values, padding 4 (top, left, bottom, right)")
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise VTAError(f"LayerSpec: kernel {self.kernel} and stride {self.stride} must be >= 1, "
                           f"padding {self.padding} >= 0")
        if self.kind == "dense" and (self.height, self.width, self.kernel, self.stride, self.padding) != (
                1, 1, (1, 1), (1, 1), (0, 0, 0, 0)):
            raise VTAError("LayerSpec: a dense layer has no spatial extent, kernel, stride or padding")
        if self.out_hw()[0] < 1 or self.out_hw()[1] < 1:
            raise VTAError(f"LayerSpec: kernel {self.kernel} larger than the padded "
                           f"{self.height}x{self.width} input")

    def out_hw(self) -> tuple[int, int]:
        oh = (self.height + self.padding[0] + self.padding[2] - self.kernel[0]) // self.stride[0] + 1
        ow = (self.width + self.padding[1] + self.padding[3] - self.kernel[1]) // self.stride[1] + 1
        return oh, ow

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.kind == "dense":
            return (self.batch, self.in_channels)
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "dense":
            return (self.out_channels, self.in_channels)
        return (self.out_channels, self.in_channels, *self.kernel)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.kind == "dense":
            return (self.batch, self.out_channels)
        return (self.batch, self.out_channels, *self.out_hw())

    @property
    def key(self) -> str:
        """Name of the workload for tuning records; relu is left out (it does not change the
        schedule or its cost), so relu and plain layers of one shape share plans."""
        if self.kind == "dense":
            return f"dense_n{self.batch}_ic{self.in_channels}_oc{self.out_channels}"
        p = ",".join(map(str, self.padding))
        return (f"conv2d_n{self.batch}_ic{self.in_channels}_oc{self.out_channels}_h{self.height}"
                f"_w{self.width}_k{self.kernel[0]}x{self.kernel[1]}_s{self.stride[0]}x{self.stride[1]}_p{p}")

    @property
    def macs(self) -> int:
        oh, ow = self.out_hw()
        return self.batch * self.out_channels * oh * ow * self.in_channels * self.kernel[0] * self.kernel[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerSpec:
        try:
            return cls(**d)
        except TypeError as e:
            raise VTAError(f"not a layer spec: {d!r} ({e})") from None


# ---------------------------------------------------------------------------------------------
# Reference


def _check_int8(name: str, a: Any, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != shape or a.dtype != np.int8:
        raise InputMismatchError(f"{name} must be int8 of shape {shape}, got {a.dtype} {a.shape}")
    return a


def _epilogue_params(spec: LayerSpec, bias: Any, shift: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (bias, shift) as int64 arrays, validated."""
    oc = spec.out_channels
    b = np.zeros(oc, np.int64) if bias is None else np.asarray(bias)
    if b.shape != (oc,) or not np.issubdtype(b.dtype, np.integer) or (
            b.size and (b.min() < -(1 << 31) or b.max() >= 1 << 31)):
        raise VTAError(f"bias must be int32 of shape ({oc},), got {b.dtype} {b.shape}")
    s = np.asarray(shift)
    if not np.issubdtype(s.dtype, np.integer) or s.shape not in ((), (1,), (oc,)) or s.min() < 0:
        raise VTAError(f"shift must be a non-negative integer scalar or ({oc},) array, got {s.dtype} {s.shape}")
    return b.astype(np.int64), np.broadcast_to(s.astype(np.int64).reshape(-1), (oc,)).copy()


def _accumulate(spec: LayerSpec, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Exact int64 sums (float64 BLAS is exact here: |sum| <= K * 2^14 < 2^53)."""
    if spec.kind == "dense":
        return np.rint(x.astype(np.float64) @ weight.astype(np.float64).T).astype(np.int64)
    pt, pl, pb, pr = spec.padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    kh, kw = spec.kernel
    sh, sw = spec.stride
    oh, ow = spec.out_hw()
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw]  # (N, C, OH, OW, KH, KW)
    acc = np.einsum("nchwij,ocij->nohw", win, weight.astype(np.float64), optimize=True)
    return np.rint(acc).astype(np.int64)


def reference_layer(spec: LayerSpec, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                    shift: Any) -> np.ndarray:
    """The CPU graph's result (int64 arithmetic), int8 in ``spec.output_shape``."""
    x = _check_int8("x", x, spec.input_shape)
    weight = _check_int8("weight", weight, spec.weight_shape)
    b, s = _epilogue_params(spec, bias, shift)
    acc = _accumulate(spec, x, weight)
    axis = (slice(None),) + (None,) * (acc.ndim - 2)  # broadcast per-channel values along dim 1
    acc = acc + b[axis]
    if spec.relu:
        acc = np.maximum(acc, 0)
    return np.clip((acc + rounding_half(s)[axis]) >> s[axis], -128, 127).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Packing


def _pad_to(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, size - a.shape[axis])
    return np.pad(a, widths)


def pack_input(spec: LayerSpec, x: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """NCHW (dense NC) -> VTA input elements ``(n_blocks, IC_blocks, H, W, BATCH, BLOCK_IN)``."""
    p = Problem.from_spec(spec, cfg)
    bt, bi = cfg.batch, cfg.block_in
    nb = -(-spec.batch // bt)
    x = _pad_to(_pad_to(x, 0, nb * bt), 1, p.ic_blocks * bi)
    if spec.kind == "dense":  # batch blocks become the width of a 1x1 "image"
        return x.reshape(nb, bt, p.ic_blocks, bi).transpose(2, 0, 1, 3)[None, :, None]
    return x.reshape(nb, bt, p.ic_blocks, bi, p.h, p.w).transpose(0, 2, 4, 5, 1, 3)


def pack_weight(spec: LayerSpec, weight: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """OIHW (dense OI) -> ``(OC_blocks, IC_blocks, KH, KW, BLOCK_OUT, BLOCK_IN)``."""
    p = Problem.from_spec(spec, cfg)
    w = weight.reshape(spec.out_channels, spec.in_channels, p.kh, p.kw)
    w = _pad_to(_pad_to(w, 0, p.oc_blocks * cfg.block_out), 1, p.ic_blocks * cfg.block_in)
    return w.reshape(p.oc_blocks, cfg.block_out, p.ic_blocks, cfg.block_in, p.kh, p.kw).transpose(0, 2, 4, 5, 1, 3)


def unpack_output(spec: LayerSpec, out: np.ndarray, cfg: VTAConfig) -> np.ndarray:
    """``(n_blocks, OC_blocks, OH, OW, BATCH, BLOCK_OUT)`` -> NCHW (dense NC), cropped."""
    p = Problem.from_spec(spec, cfg)
    out = out.reshape(p.n_blocks, p.oc_blocks, p.oh, p.ow, cfg.batch, cfg.block_out)
    if spec.kind == "dense":
        y = out[0, :, 0].transpose(1, 2, 0, 3).reshape(p.w * cfg.batch, p.oc_blocks * cfg.block_out)
        return np.ascontiguousarray(y[:spec.batch, :spec.out_channels])
    y = out.transpose(0, 4, 1, 5, 2, 3).reshape(p.n_blocks * cfg.batch, p.oc_blocks * cfg.block_out, p.oh, p.ow)
    return np.ascontiguousarray(y[:spec.batch, :spec.out_channels])


# ---------------------------------------------------------------------------------------------
# Compile and run


@dataclass(frozen=True)
class CompiledLayer:
    """A layer lowered for one config: the program plus the DRAM image it runs on."""

    spec: LayerSpec
    plan: TilePlan
    cfg: VTAConfig
    program: tuple[AnyInsn, ...]
    dram: np.ndarray  # uint8 image: weights, constants, micro-ops; input/output regions zero
    bases: DramBases

    @property
    def gemm_ops(self) -> int:
        """GEMM micro-op iterations (analytic; equals the simulator's ``gemm_counter``)."""
        return Problem.from_spec(self.spec, self.cfg).gemm_ops

    @cached_property
    def program_bytes(self) -> bytes:
        return encode_program(self.program, self.cfg)

    def to_bytes(self) -> bytes:
        """Self-contained serialization (header JSON, encoded program, DRAM image)."""
        header = json.dumps({
            "version": _FORMAT_VERSION, "config_name": self.cfg.name, "config": self.cfg.to_dict(),
            "spec": self.spec.to_dict(), "plan": self.plan.to_dict(),
            "bases": dataclasses.asdict(self.bases)}).encode()
        prog = self.program_bytes
        image = np.ascontiguousarray(self.dram, dtype=np.uint8).tobytes()
        return b"".join([_MAGIC, struct.pack("<IQQ", len(header), len(prog), len(image)),
                         header, prog, image])

    @classmethod
    def from_bytes(cls, data: bytes, cfg: VTAConfig) -> CompiledLayer:
        """Inverse of :meth:`to_bytes`; ``cfg`` must have the ISA of the config it was built for
        (timing parameters may differ)."""
        data = bytes(data)
        head = len(_MAGIC) + struct.calcsize("<IQQ")
        if len(data) < head or not data.startswith(_MAGIC):
            raise VTAError("not a compiled VTA layer (bad magic)")
        n_header, n_prog, n_image = struct.unpack_from("<IQQ", data, len(_MAGIC))
        if len(data) != head + n_header + n_prog + n_image:
            raise VTAError(f"compiled VTA layer is truncated or padded ({len(data)} B, expected "
                           f"{head + n_header + n_prog + n_image})")
        try:
            meta = json.loads(data[head:head + n_header])
        except ValueError as e:
            raise VTAError(f"compiled VTA layer has a corrupt header: {e}") from None
        if meta.get("version") != _FORMAT_VERSION:
            raise VTAError(f"compiled VTA layer format {meta.get('version')!r} is not {_FORMAT_VERSION}")
        if meta["config_name"] != cfg.name:
            raise VTAError(f"compiled VTA layer is for config {meta['config_name']}, not {cfg.name}")
        prog = data[head + n_header:head + n_header + n_prog]
        image = np.frombuffer(data, np.uint8, n_image, head + n_header + n_prog).copy()
        return cls(LayerSpec.from_dict(meta["spec"]), TilePlan.from_dict(meta["plan"]), cfg,
                   tuple(decode_program(prog, cfg)), image, DramBases(**meta["bases"]))


def _check_overflow(spec: LayerSpec, weight: np.ndarray, b: np.ndarray, s: np.ndarray) -> None:
    """VTA adds ``bias + half(shift)`` in int32; refuse channels where that could wrap."""
    bound = 128 * np.abs(weight.reshape(spec.out_channels, -1).astype(np.int64)).sum(axis=1)
    worst = bound + np.abs(b) + rounding_half(s)
    bad = np.flatnonzero(worst > (1 << 31) - 1)
    if bad.size:
        c = int(bad[0])
        raise VTAError(f"layer {spec.key}: channel {c} could overflow VTA's int32 accumulator "
                       f"(|acc| <= {int(bound[c])}, bias {int(b[c])}, shift {int(s[c])}); "
                       f"{bad.size} channel(s) affected, run this layer on the CPU")


def compile_layer(spec: LayerSpec, weight_int8: np.ndarray, bias_int32: np.ndarray | None, shift: Any,
                  cfg: VTAConfig, plan: TilePlan | None = None, *, virtual_threads: int = 2) -> CompiledLayer:
    """Pack the constants and lower ``spec`` with ``plan`` (default: the planner's best
    estimate for ``virtual_threads``; an explicit plan carries its own virtual threads)."""
    weight = _check_int8("weight", weight_int8, spec.weight_shape)
    b, s = _epilogue_params(spec, bias_int32, shift)
    _check_overflow(spec, weight, b, s)
    p = Problem.from_spec(spec, cfg)
    check_layer(p, cfg)
    plan = default_plan(p, cfg, virtual_threads) if plan is None else plan
    img = DramImage(cfg)
    wgt_base = img.put(MemType.WGT, pack_weight(spec, weight, cfg))
    ocp = p.oc_blocks * cfg.block_out
    rows = np.stack([_pad_to(b + rounding_half(s), 0, ocp), _pad_to(s, 0, ocp)]).reshape(2 * p.oc_blocks, 1, cfg.block_out)
    const_base = img.put(MemType.ACC, np.broadcast_to(rows, (2 * p.oc_blocks, cfg.batch, cfg.block_out)))
    inp_base = img.alloc(MemType.INP, p.n_blocks * p.ic_blocks * p.h * p.w)
    out_base = img.alloc(MemType.OUT, p.n_blocks * p.oc_blocks * p.oh * p.ow)
    bases = DramBases(*(int(v) for v in (inp_base, wgt_base, const_base, out_base)))
    program = lower(p, plan, cfg, img, bases, spec.relu)
    return CompiledLayer(spec, plan, cfg, tuple(program.insns), img.data.copy(), bases)


def run_layer(compiled: CompiledLayer, x_int8: np.ndarray, *, force_serial: bool = False,
              simulator: Simulator | None = None) -> tuple[np.ndarray, SimStats]:
    """Run on the simulator: returns the int8 output (``spec.output_shape``) and the stats."""
    spec, cfg = compiled.spec, compiled.cfg
    x = _check_int8("x", x_int8, spec.input_shape)
    img = DramImage(cfg)
    img.data = compiled.dram.copy()
    img.write(MemType.INP, compiled.bases.inp, pack_input(spec, x, cfg))
    sim = simulator or Simulator(cfg)
    result = sim.run(compiled.program_bytes, img.data, force_serial=force_serial, inplace=True)
    p = Problem.from_spec(spec, cfg)
    out = img.read(MemType.OUT, compiled.bases.out, p.n_blocks * p.oc_blocks * p.oh * p.ow, data=result.dram)
    return unpack_output(spec, out, cfg), result.stats


__all__ = ["LayerSpec", "CompiledLayer", "reference_layer", "compile_layer", "run_layer",
           "pack_input", "pack_weight", "unpack_output", "KINDS"]
