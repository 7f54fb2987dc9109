"""Hardware description of the VTA-like accelerator: one frozen dataclass, everything else derived.

The ISA fields are VTA's ``vta_config.json`` keys (``LOG_*``), so an original config file loads
unchanged; the default is VTA's ``1x16_i8w8a32_15_15_18_17`` bitstream. ``LOG_BUS_WIDTH`` and the
timing fields parameterize the simulator's cycle model (they do not change the encoding).

Everything the ISA, simulator, planner and lowering need (element sizes, buffer depths, field
widths, the bit layout of every instruction) is a property computed here, so a non-default
config (e.g. ``2x8_i8w8a32_15_15_16_17``) works everywhere without a hard-coded 16.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from accelc.errors import AccelcError


class VTAError(AccelcError):
    """Illegal config, instruction field or program; also raised with the simulator's message.

    ``code`` is the simulator's error code (0 when raised in Python); ``insn_index`` is the
    offending instruction where one is known, else -1.
    """

    def __init__(self, message: str, code: int = 0, insn_index: int = -1, stats: Any = None):
        super().__init__(message)
        self.code = code
        self.insn_index = insn_index
        self.stats = stats  # partial simulator statistics when the simulator raised


# Fixed ISA constants of VTA (hw_spec_const.h); they do not depend on the config.
INSN_BITS = 128
UOP_BITS = 32
OPCODE_BITS = 3
MEMORY_TYPE_BITS = 3
ALU_OPCODE_BITS = 3
ALU_IMM_BITS = 16
LOOP_ITER_BITS = 14
SRAM_ADDR_BITS = 16
DRAM_ADDR_BITS = 32
MEMOP_SIZE_BITS = 16
MEMOP_STRIDE_BITS = 16
MEMOP_PAD_BITS = 4

# Keys of VTA's vta_config.json that carry no meaning here (board name, hardware version).
_IGNORED_JSON_KEYS = ("TARGET", "HW_VER")

_NAME_RE = re.compile(
    r"^(?P<batch>\d+)x(?P<block_in>\d+)(?:x(?P<block_out>\d+))?"
    r"_i(?P<inp>\d+)w(?P<wgt>\d+)a(?P<acc>\d+)"
    r"_(?P<uop>\d+)_(?P<inpb>\d+)_(?P<wgtb>\d+)_(?P<accb>\d+)$"
)


def _log2_exact(value: int, what: str) -> int:
    if value <= 0 or value & (value - 1):
        raise VTAError(f"{what} must be a power of two, got {value}")
    return value.bit_length() - 1


@dataclass(frozen=True)
class FieldLayout:
    """Bit position of one instruction field inside the 128-bit word (little-endian)."""

    offset: int
    width: int
    signed: bool = False


def _pack_fields(fields: list[tuple[str, int]], unit_bits: int, total_bits: int, kind: str,
                 signed: tuple[str, ...] = ()) -> dict[str, FieldLayout]:
    """Place fields in declaration order like C bitfields on ``uint{unit_bits}_t``.

    A field never straddles a storage unit: if it does not fit in what is left of the current
    unit it starts the next one. This reproduces VTA's hw_spec.h layout bit for bit at the
    default config and is what the C compiler would do with any other config.
    """
    layout, pos = {}, 0
    for name, width in fields:
        if width > unit_bits:
            raise VTAError(f"{kind}.{name} needs {width} bits > {unit_bits}")
        if pos // unit_bits != (pos + width - 1) // unit_bits and width > 0:
            pos = (pos // unit_bits + 1) * unit_bits
        layout[name] = FieldLayout(pos, width, name in signed)
        pos += width
    if pos > total_bits:
        raise VTAError(
            f"{kind} instruction needs {pos} bits > {total_bits} with this config "
            f"(fields: {', '.join(f'{n}:{w}' for n, w in fields)}); reduce a buffer size"
        )
    return layout


@dataclass(frozen=True)
class VTAConfig:
    """VTA parameters. ``LOG_*`` ISA fields as in ``vta_config.json``; timing fields for the model.

    Timing fields (cycles at ``FREQ_MHZ``): DMA costs ``DMA_LATENCY + ceil(bytes / bus_bytes)``;
    GEMM ``GEMM_PIPELINE_DEPTH + GEMM_II * iterations``; ALU likewise with ``ALU_*``; the fetch
    unit feeds three command queues of ``CMD_QUEUE_DEPTH`` and the four dependency-token queues
    hold ``DEP_QUEUE_DEPTH`` tokens each (HLS ``STREAM_IN_DEPTH = 8``).
    """

    LOG_INP_WIDTH: int = 3
    LOG_WGT_WIDTH: int = 3
    LOG_ACC_WIDTH: int = 5
    LOG_BATCH: int = 0
    LOG_BLOCK_IN: int = 4
    LOG_BLOCK_OUT: int = 4
    LOG_UOP_BUFF_SIZE: int = 15
    LOG_INP_BUFF_SIZE: int = 15
    LOG_WGT_BUFF_SIZE: int = 18
    LOG_ACC_BUFF_SIZE: int = 17
    # AXI data bus width in bits, log2 (PYNQ: 64-bit = 6; Ultra96/ZCU104: 128-bit = 7).
    LOG_BUS_WIDTH: int = 6
    # Cycle-model parameters (an approximation of tsim; see sim/vta_sim.h).
    FREQ_MHZ: float = 100.0
    DMA_LATENCY: int = 32
    GEMM_PIPELINE_DEPTH: int = 4
    ALU_PIPELINE_DEPTH: int = 4
    GEMM_II: int = 1
    ALU_II: int = 2
    CMD_QUEUE_DEPTH: int = 8
    DEP_QUEUE_DEPTH: int = 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = float if f.type in ("float", float) else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    expected is int and not isinstance(value, int)):
                raise VTAError(f"VTAConfig.{f.name} must be {expected.__name__}, got {value!r}")
        ranges = {
            "LOG_INP_WIDTH": (3, 5), "LOG_WGT_WIDTH": (3, 5), "LOG_ACC_WIDTH": (4, 6),
            "LOG_BATCH": (0, 4), "LOG_BLOCK_IN": (0, 6), "LOG_BLOCK_OUT": (0, 6),
            "LOG_UOP_BUFF_SIZE": (3, 24), "LOG_INP_BUFF_SIZE": (1, 24),
            "LOG_WGT_BUFF_SIZE": (1, 24), "LOG_ACC_BUFF_SIZE": (1, 24),
            "LOG_BUS_WIDTH": (3, 10), "DMA_LATENCY": (0, 1 << 20),
            "GEMM_PIPELINE_DEPTH": (0, 1024), "ALU_PIPELINE_DEPTH": (0, 1024),
            "GEMM_II": (1, 64), "ALU_II": (1, 64),
            "CMD_QUEUE_DEPTH": (1, 1 << 16), "DEP_QUEUE_DEPTH": (1, 1 << 16),
        }
        for name, (lo, hi) in ranges.items():
            if not lo <= getattr(self, name) <= hi:
                raise VTAError(f"VTAConfig.{name}={getattr(self, name)} outside [{lo}, {hi}]")
        if self.LOG_ACC_WIDTH < max(self.LOG_INP_WIDTH, self.LOG_WGT_WIDTH):
            raise VTAError("accumulator must be at least as wide as inputs and weights")
        if not self.FREQ_MHZ > 0:
            raise VTAError(f"VTAConfig.FREQ_MHZ must be > 0, got {self.FREQ_MHZ}")
        for buf in ("uop", "inp", "wgt", "acc"):
            log_depth = getattr(self, f"log_{buf}_depth")
            if not 1 <= log_depth <= SRAM_ADDR_BITS:
                raise VTAError(
                    f"{buf} buffer depth 2^{log_depth} ({buf} buffer of 2^"
                    f"{getattr(self, f'LOG_{buf.upper()}_BUFF_SIZE')} B, elements of "
                    f"{getattr(self, f'{buf}_elem_bytes')} B) must be in [2, 2^{SRAM_ADDR_BITS}]")
        self.layouts  # noqa: B018  (raises VTAError when a field does not fit)

    # ---- construction / serialization -------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VTAConfig:
        """Accepts VTA's own ``vta_config.json`` keys (``LOG_BLOCK``, ``TARGET``, ``HW_VER``)."""
        d = dict(d)
        for key in _IGNORED_JSON_KEYS:
            d.pop(key, None)
        if "LOG_BLOCK" in d:
            block = d.pop("LOG_BLOCK")
            for key in ("LOG_BLOCK_IN", "LOG_BLOCK_OUT"):
                if d.setdefault(key, block) != block:
                    raise VTAError(f"LOG_BLOCK={block} contradicts {key}={d[key]}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VTAError(f"unknown VTA config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> VTAConfig:
        """Parse a JSON string, or read a ``.json`` file when given a path."""
        text = str(text_or_path)
        if isinstance(text_or_path, Path) or not text.lstrip().startswith("{"):
            try:
                text = Path(text_or_path).read_text()
            except OSError as e:
                raise VTAError(f"cannot read VTA config {text_or_path}: {e}") from e
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise VTAError(f"VTA config is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise VTAError("VTA config JSON must be an object")
        return cls.from_dict(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_name(cls, name: str, **timing: Any) -> VTAConfig:
        """Inverse of :attr:`name` (``1x16_i8w8a32_15_15_18_17``); timing fields as keywords."""
        m = _NAME_RE.match(name)
        if not m:
            raise VTAError(f"not a VTA config name: {name!r} (expected like 1x16_i8w8a32_15_15_18_17)")
        g = m.groupdict()
        return cls(
            LOG_BATCH=_log2_exact(int(g["batch"]), "batch"),
            LOG_BLOCK_IN=_log2_exact(int(g["block_in"]), "block_in"),
            LOG_BLOCK_OUT=_log2_exact(int(g["block_out"] or g["block_in"]), "block_out"),
            LOG_INP_WIDTH=_log2_exact(int(g["inp"]), "input width"),
            LOG_WGT_WIDTH=_log2_exact(int(g["wgt"]), "weight width"),
            LOG_ACC_WIDTH=_log2_exact(int(g["acc"]), "accumulator width"),
            LOG_UOP_BUFF_SIZE=int(g["uop"]), LOG_INP_BUFF_SIZE=int(g["inpb"]),
            LOG_WGT_BUFF_SIZE=int(g["wgtb"]), LOG_ACC_BUFF_SIZE=int(g["accb"]), **timing)

    @property
    def name(self) -> str:
        """VTA's bitstream name, e.g. ``1x16_i8w8a32_15_15_18_17`` (``BxIxO_`` if BLOCK_IN != OUT)."""
        block = f"{self.block_in}" if self.block_in == self.block_out else f"{self.block_in}x{self.block_out}"
        return (f"{self.batch}x{block}_i{self.inp_width}w{self.wgt_width}a{self.acc_width}_"
                f"{self.LOG_UOP_BUFF_SIZE}_{self.LOG_INP_BUFF_SIZE}_{self.LOG_WGT_BUFF_SIZE}_"
                f"{self.LOG_ACC_BUFF_SIZE}")

    def replace(self, **changes: Any) -> VTAConfig:
        return dataclasses.replace(self, **changes)

    # ---- tensor shapes and widths -------------------------------------------------------
    batch = property(lambda self: 1 << self.LOG_BATCH)
    block_in = property(lambda self: 1 << self.LOG_BLOCK_IN)
    block_out = property(lambda self: 1 << self.LOG_BLOCK_OUT)
    inp_width = property(lambda self: 1 << self.LOG_INP_WIDTH)
    wgt_width = property(lambda self: 1 << self.LOG_WGT_WIDTH)
    acc_width = property(lambda self: 1 << self.LOG_ACC_WIDTH)
    # pkg_config.py: the output (store) width equals the input width.
    LOG_OUT_WIDTH = property(lambda self: self.LOG_INP_WIDTH)
    out_width = property(lambda self: 1 << self.LOG_OUT_WIDTH)
    inp_dtype = property(lambda self: f"int{self.inp_width}")
    wgt_dtype = property(lambda self: f"int{self.wgt_width}")
    acc_dtype = property(lambda self: f"int{self.acc_width}")
    out_dtype = property(lambda self: f"int{self.out_width}")
    # One GEMM micro-op: (BATCH, BLOCK_IN) x (BLOCK_OUT, BLOCK_IN)^T.
    macs_per_uop = property(lambda self: self.batch * self.block_in * self.block_out)
    bus_bytes = property(lambda self: (1 << self.LOG_BUS_WIDTH) // 8)
    LOG_OUT_BUFF_SIZE = property(
        lambda self: self.LOG_ACC_BUFF_SIZE + self.LOG_OUT_WIDTH - self.LOG_ACC_WIDTH)

    # Element ("tensor register") shapes and sizes; SRAM and DRAM addresses count elements.
    inp_elem_shape = property(lambda self: (self.batch, self.block_in))
    wgt_elem_shape = property(lambda self: (self.block_out, self.block_in))
    acc_elem_shape = property(lambda self: (self.batch, self.block_out))
    out_elem_shape = property(lambda self: (self.batch, self.block_out))
    inp_elem_bytes = property(lambda self: self.batch * self.block_in * self.inp_width // 8)
    wgt_elem_bytes = property(lambda self: self.block_out * self.block_in * self.wgt_width // 8)
    acc_elem_bytes = property(lambda self: self.batch * self.block_out * self.acc_width // 8)
    out_elem_bytes = property(lambda self: self.batch * self.block_out * self.out_width // 8)
    uop_elem_bytes = property(lambda self: UOP_BITS // 8)
    insn_bytes = property(lambda self: INSN_BITS // 8)

    # Buffer depths in elements (log2); the SRAM index fields are this wide.
    log_uop_depth = property(lambda self: self.LOG_UOP_BUFF_SIZE - (self.uop_elem_bytes.bit_length() - 1))
    log_inp_depth = property(lambda self: self.LOG_INP_BUFF_SIZE - (self.inp_elem_bytes.bit_length() - 1))
    log_wgt_depth = property(lambda self: self.LOG_WGT_BUFF_SIZE - (self.wgt_elem_bytes.bit_length() - 1))
    log_acc_depth = property(lambda self: self.LOG_ACC_BUFF_SIZE - (self.acc_elem_bytes.bit_length() - 1))
    uop_depth = property(lambda self: 1 << self.log_uop_depth)
    inp_depth = property(lambda self: 1 << self.log_inp_depth)
    wgt_depth = property(lambda self: 1 << self.log_wgt_depth)
    acc_depth = property(lambda self: 1 << self.log_acc_depth)
    out_depth = property(lambda self: self.acc_depth)  # the store reads the accumulator indices

    # Field widths (hw_spec.h).
    uop_dst_bits = property(lambda self: self.log_acc_depth)
    uop_src_bits = property(lambda self: max(self.log_acc_depth, self.log_inp_depth))
    uop_wgt_bits = property(lambda self: self.log_wgt_depth)
    uop_bgn_bits = property(lambda self: self.log_uop_depth)
    uop_end_bits = property(lambda self: self.log_uop_depth + 1)
    max_iter = property(lambda self: (1 << LOOP_ITER_BITS) - 1)
    max_pad = property(lambda self: (1 << MEMOP_PAD_BITS) - 1)
    imm_min = property(lambda self: -(1 << (ALU_IMM_BITS - 1)))
    imm_max = property(lambda self: (1 << (ALU_IMM_BITS - 1)) - 1)

    @cached_property
    def layouts(self) -> dict[str, dict[str, FieldLayout]]:
        """Bit layout of every instruction kind (``mem``, ``gemm``, ``alu``, ``finish``, ``uop``)."""
        header = [("opcode", OPCODE_BITS), ("pop_prev", 1), ("pop_next", 1),
                  ("push_prev", 1), ("push_next", 1)]
        mem = header + [
            ("memory_type", MEMORY_TYPE_BITS), ("sram_base", SRAM_ADDR_BITS),
            ("dram_base", DRAM_ADDR_BITS), ("y_size", MEMOP_SIZE_BITS), ("x_size", MEMOP_SIZE_BITS),
            ("x_stride", MEMOP_STRIDE_BITS), ("y_pad_0", MEMOP_PAD_BITS),
            ("y_pad_1", MEMOP_PAD_BITS), ("x_pad_0", MEMOP_PAD_BITS), ("x_pad_1", MEMOP_PAD_BITS)]
        loop = header + [
            ("reset", 1), ("uop_bgn", self.uop_bgn_bits), ("uop_end", self.uop_end_bits),
            ("iter_out", LOOP_ITER_BITS), ("iter_in", LOOP_ITER_BITS),
            ("dst_factor_out", self.log_acc_depth), ("dst_factor_in", self.log_acc_depth)]
        gemm = loop + [
            ("src_factor_out", self.log_inp_depth), ("src_factor_in", self.log_inp_depth),
            ("wgt_factor_out", self.log_wgt_depth), ("wgt_factor_in", self.log_wgt_depth)]
        # hw_spec.h: ALU source factors index the accumulator, so they are LOG_ACC_DEPTH wide.
        alu = loop + [
            ("src_factor_out", self.log_acc_depth), ("src_factor_in", self.log_acc_depth),
            ("alu_opcode", ALU_OPCODE_BITS), ("use_imm", 1), ("imm", ALU_IMM_BITS)]
        uop = [("dst", self.uop_dst_bits), ("src", self.uop_src_bits), ("wgt", self.uop_wgt_bits)]
        return {
            "mem": _pack_fields(mem, 64, INSN_BITS, "LOAD/STORE"),
            "gemm": _pack_fields(gemm, 64, INSN_BITS, "GEMM"),
            "alu": _pack_fields(alu, 64, INSN_BITS, "ALU", signed=("imm",)),
            "finish": _pack_fields(header, 64, INSN_BITS, "FINISH"),
            "uop": _pack_fields(uop, 32, UOP_BITS, "micro-op"),
        }

    def summary(self) -> str:
        """Human-readable table of the derived quantities (``accelc vta info`` material)."""
        rows = [
            ("name", self.name),
            ("GEMM", f"({self.batch}x{self.block_in}) x ({self.block_in}x{self.block_out}) "
                     f"{self.inp_dtype}*{self.wgt_dtype}->{self.acc_dtype}, {self.macs_per_uop} MAC/cycle"),
        ]
        for buf in ("uop", "inp", "wgt", "acc"):
            rows.append((f"{buf} buffer", f"{getattr(self, f'{buf}_depth')} x "
                         f"{getattr(self, f'{buf}_elem_bytes')} B"))
        rows.append(("bus", f"{8 * self.bus_bytes} bit @ {self.FREQ_MHZ:g} MHz"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


DEFAULT_CONFIG = VTAConfig()

# Named configs usable wherever a config is chosen by name (CLI choices).
PRESETS: dict[str, VTAConfig] = {
    cfg.name: cfg for cfg in (
        DEFAULT_CONFIG,
        # BATCH 2, BLOCK 8: weights 64 B/elem, so a 64 KiB weight buffer keeps depth 1024 and the
        # micro-op and GEMM fields at VTA's widths (a 256 KiB one would need a 34-bit micro-op).
        VTAConfig(LOG_BATCH=1, LOG_BLOCK_IN=3, LOG_BLOCK_OUT=3, LOG_WGT_BUFF_SIZE=16),
    )
}


def resolve_config(spec: VTAConfig | str | Path | None) -> VTAConfig:
    """A config from a config, a preset name, a JSON file path or JSON text (None: default)."""
    if spec is None:
        return DEFAULT_CONFIG
    if isinstance(spec, VTAConfig):
        return spec
    text = str(spec)
    if text in PRESETS:
        return PRESETS[text]
    if _NAME_RE.match(text):
        return VTAConfig.from_name(text)
    return VTAConfig.from_json(spec)


__all__ = ["VTAConfig", "VTAError", "FieldLayout", "DEFAULT_CONFIG", "PRESETS", "resolve_config"]
