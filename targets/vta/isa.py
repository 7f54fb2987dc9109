"""VTA instruction set: 128-bit LOAD/STORE/GEMM/ALU/FINISH instructions and 32-bit micro-ops.

Bit layouts come from :attr:`VTAConfig.layouts` (VTA's hw_spec.h bitfields, derived from the
config). One frozen dataclass per instruction kind; :func:`encode`/:func:`decode` convert to and
from 16 little-endian bytes; :func:`validate` holds the legality rules the simulator also
enforces, so illegal programs are caught at emission time. :class:`ProgramBuilder` assembles
a stream with VTA runtime semantics for dependency tokens (``DepPush``/``DepPop``: pending pops
ride on the next instruction of the popping stage, pushes on the last instruction of the
pushing stage, NOPs carry them otherwise). :func:`disasm` prints one instruction per line.

Pipeline stages are ordered load(1) < compute(2) < store(3); "prev"/"next" flags refer to the
neighbouring stage. Token queues: l2g (load->compute), g2l (compute->load), g2s
(compute->store), s2g (store->compute).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

from .config import INSN_BITS, VTAConfig, VTAError, resolve_config


class Opcode(IntEnum):
    LOAD = 0
    STORE = 1
    GEMM = 2
    FINISH = 3
    ALU = 4


class MemType(IntEnum):
    UOP = 0
    WGT = 1
    INP = 2
    ACC = 3
    OUT = 4
    ACC_8BIT = 5  # OUT-width values in DRAM, sign-extended into the accumulator


class AluOp(IntEnum):
    MIN = 0
    MAX = 1
    ADD = 2
    SHR = 3  # arithmetic right shift; a negative amount shifts left
    MUL = 4


class Stage(IntEnum):
    LOAD = 1
    COMPUTE = 2
    STORE = 3


# (producer stage, consumer stage) -> token queue name
QUEUES: dict[tuple[Stage, Stage], str] = {
    (Stage.LOAD, Stage.COMPUTE): "l2g",
    (Stage.COMPUTE, Stage.LOAD): "g2l",
    (Stage.COMPUTE, Stage.STORE): "g2s",
    (Stage.STORE, Stage.COMPUTE): "s2g",
}
QUEUE_DESCRIPTIONS = {
    "l2g": "load->compute", "g2l": "compute->load",
    "g2s": "compute->store", "s2g": "store->compute",
}
# Loads routed to the load engine; every other LOAD (UOP, ACC, ACC_8BIT) runs on compute.
LOAD_ENGINE_MEM_TYPES = (MemType.INP, MemType.WGT)
LOADABLE_MEM_TYPES = (MemType.UOP, MemType.WGT, MemType.INP, MemType.ACC, MemType.ACC_8BIT)


def elem_bytes(cfg: VTAConfig, mem_type: MemType) -> int:
    """Bytes of one element of ``mem_type`` in DRAM; DRAM addresses count these elements."""
    return {
        MemType.UOP: cfg.uop_elem_bytes, MemType.WGT: cfg.wgt_elem_bytes,
        MemType.INP: cfg.inp_elem_bytes, MemType.ACC: cfg.acc_elem_bytes,
        MemType.OUT: cfg.out_elem_bytes, MemType.ACC_8BIT: cfg.out_elem_bytes,
    }[MemType(mem_type)]


def sram_depth(cfg: VTAConfig, mem_type: MemType) -> int:
    """Depth (elements) of the on-chip buffer that ``mem_type`` loads into / stores from."""
    return {
        MemType.UOP: cfg.uop_depth, MemType.WGT: cfg.wgt_depth, MemType.INP: cfg.inp_depth,
        MemType.ACC: cfg.acc_depth, MemType.OUT: cfg.acc_depth, MemType.ACC_8BIT: cfg.acc_depth,
    }[MemType(mem_type)]


# ---------------------------------------------------------------------------------------------
# Instruction dataclasses


@dataclass(frozen=True, kw_only=True)
class Insn:
    """Fields shared by every instruction: the four dependency-token flags."""

    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    @property
    def stage(self) -> Stage:
        raise NotImplementedError

    def with_deps(self, **flags: bool) -> Insn:
        return dataclasses.replace(self, **flags)

    def popped_queues(self) -> list[str]:
        """Token queues this instruction pops before it runs (stage-relative flags resolved)."""
        out = []
        if self.pop_prev and self.stage > Stage.LOAD:
            out.append(QUEUES[(Stage(self.stage - 1), self.stage)])
        if self.pop_next and self.stage < Stage.STORE:
            out.append(QUEUES[(Stage(self.stage + 1), self.stage)])
        return out

    def pushed_queues(self) -> list[str]:
        """Token queues this instruction pushes after it completes."""
        out = []
        if self.push_prev and self.stage > Stage.LOAD:
            out.append(QUEUES[(self.stage, Stage(self.stage - 1))])
        if self.push_next and self.stage < Stage.STORE:
            out.append(QUEUES[(self.stage, Stage(self.stage + 1))])
        return out


@dataclass(frozen=True, kw_only=True)
class MemInsn(Insn):
    """LOAD (DRAM -> SRAM, 2-D with zero padding) or STORE (acc -> DRAM, truncated)."""

    opcode: Opcode = Opcode.LOAD
    memory_type: MemType
    sram_base: int
    dram_base: int
    y_size: int
    x_size: int
    x_stride: int
    y_pad_0: int = 0
    y_pad_1: int = 0
    x_pad_0: int = 0
    x_pad_1: int = 0

    @property
    def stage(self) -> Stage:
        if self.opcode == Opcode.STORE:
            return Stage.STORE
        return Stage.LOAD if self.memory_type in LOAD_ENGINE_MEM_TYPES else Stage.COMPUTE

    @property
    def is_nop(self) -> bool:
        """``x_size == 0``: moves nothing, exists to carry dependency flags."""
        return self.x_size == 0

    @property
    def sram_extent(self) -> int:
        """SRAM elements written (LOAD, padding included) or read (STORE)."""
        if self.is_nop:
            return 0
        return (self.y_pad_0 + self.y_size + self.y_pad_1) * (self.x_pad_0 + self.x_size + self.x_pad_1)


@dataclass(frozen=True, kw_only=True)
class GemmInsn(Insn):
    """``for o < iter_out: for i < iter_in: for u in [uop_bgn, uop_end): acc[d] += inp[s] . wgt[w]^T``
    with ``d = uop.dst + o*dst_factor_out + i*dst_factor_in`` (likewise ``s``, ``w``);
    ``reset`` zeroes ``acc[d]`` instead."""

    reset: bool = False
    uop_bgn: int
    uop_end: int
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0
    wgt_factor_out: int = 0
    wgt_factor_in: int = 0

    stage = property(lambda self: Stage.COMPUTE)
    opcode = property(lambda self: Opcode.GEMM)
    n_iters = property(lambda self: self.iter_out * self.iter_in * (self.uop_end - self.uop_bgn))


@dataclass(frozen=True, kw_only=True)
class AluInsn(Insn):
    """Same loop as GEMM over accumulator rows: ``acc[d] = op(acc[d], imm if use_imm else acc[s])``."""

    alu_opcode: AluOp
    use_imm: bool = False
    imm: int = 0
    uop_bgn: int
    uop_end: int
    iter_out: int = 1
    iter_in: int = 1
    dst_factor_out: int = 0
    dst_factor_in: int = 0
    src_factor_out: int = 0
    src_factor_in: int = 0
    reset: bool = False  # encoded bit of the shared GEMM/ALU header; must stay 0

    stage = property(lambda self: Stage.COMPUTE)
    opcode = property(lambda self: Opcode.ALU)
    n_iters = property(lambda self: self.iter_out * self.iter_in * (self.uop_end - self.uop_bgn))


@dataclass(frozen=True, kw_only=True)
class FinishInsn(Insn):
    """Ends the program (compute engine); all engines must be idle and all token queues empty."""

    stage = property(lambda self: Stage.COMPUTE)
    opcode = property(lambda self: Opcode.FINISH)


@dataclass(frozen=True)
class Uop:
    """Micro-op: accumulator row ``dst``; ``src`` is an input row (GEMM) or accumulator row (ALU)."""

    dst: int
    src: int = 0
    wgt: int = 0


AnyInsn = Union[MemInsn, GemmInsn, AluInsn, FinishInsn]

# ---------------------------------------------------------------------------------------------
# Encoding

_FLAG_FIELDS = ("pop_prev", "pop_next", "push_prev", "push_next")


def _layout_kind(insn: Insn) -> str:
    if isinstance(insn, MemInsn):
        return "mem"
    if isinstance(insn, GemmInsn):
        return "gemm"
    if isinstance(insn, AluInsn):
        return "alu"
    if isinstance(insn, FinishInsn):
        return "finish"
    raise VTAError(f"not a VTA instruction: {insn!r}")


def _field_values(insn: Insn) -> dict[str, int]:
    values = {f.name: getattr(insn, f.name) for f in dataclasses.fields(insn)}
    values["opcode"] = int(insn.opcode)
    return {k: int(v) for k, v in values.items()}


def _pack(values: dict[str, int], layout, what: str) -> int:
    word = 0
    for name, fl in layout.items():
        v = values.get(name, 0)
        if fl.signed:
            lo, hi = -(1 << (fl.width - 1)), (1 << (fl.width - 1)) - 1
        else:
            lo, hi = 0, (1 << fl.width) - 1
        if not lo <= v <= hi:
            raise VTAError(f"{what}: field {name}={v} does not fit in {fl.width} bits "
                           f"({'signed' if fl.signed else 'unsigned'} range [{lo}, {hi}])")
        word |= (v & ((1 << fl.width) - 1)) << fl.offset
    return word


def _unpack(word: int, layout) -> dict[str, int]:
    out = {}
    for name, fl in layout.items():
        v = (word >> fl.offset) & ((1 << fl.width) - 1)
        if fl.signed and v >> (fl.width - 1):
            v -= 1 << fl.width
        out[name] = v
    return out


def encode(insn: Insn, cfg: VTAConfig, check: bool = True) -> bytes:
    """16 little-endian bytes. ``check=False`` skips :func:`validate` (field widths are always
    checked) so tests can build illegal-but-encodable programs."""
    if check:
        validate(insn, cfg)
    kind = _layout_kind(insn)
    word = _pack(_field_values(insn), cfg.layouts[kind], type(insn).__name__)
    return word.to_bytes(INSN_BITS // 8, "little")


def encode_program(insns: Iterable[Insn], cfg: VTAConfig, check: bool = True) -> bytes:
    out = []
    for i, insn in enumerate(insns):
        try:
            out.append(encode(insn, cfg, check))
        except VTAError as e:
            raise VTAError(f"instruction {i}: {e}", insn_index=i) from None
    return b"".join(out)


def decode(data: bytes, cfg: VTAConfig) -> AnyInsn:
    """Inverse of :func:`encode`; raises VTAError on an unknown opcode or memory type."""
    if len(data) != INSN_BITS // 8:
        raise VTAError(f"an instruction is {INSN_BITS // 8} bytes, got {len(data)}")
    word = int.from_bytes(bytes(data), "little")
    opcode = word & 0b111
    flags = {k: bool(v) for k, v in _unpack(word, cfg.layouts["finish"]).items() if k in _FLAG_FIELDS}
    if opcode in (Opcode.LOAD, Opcode.STORE):
        v = _unpack(word, cfg.layouts["mem"])
        if v["memory_type"] not in MemType._value2member_map_:
            raise VTAError(f"unknown memory type {v['memory_type']}")
        return MemInsn(opcode=Opcode(opcode), memory_type=MemType(v["memory_type"]),
                       **{k: v[k] for k in ("sram_base", "dram_base", "y_size", "x_size", "x_stride",
                                            "y_pad_0", "y_pad_1", "x_pad_0", "x_pad_1")}, **flags)
    if opcode == Opcode.GEMM:
        v = _unpack(word, cfg.layouts["gemm"])
        fields = {f.name for f in dataclasses.fields(GemmInsn)} - set(_FLAG_FIELDS)
        return GemmInsn(**{k: (bool(v[k]) if k == "reset" else v[k]) for k in fields}, **flags)
    if opcode == Opcode.ALU:
        v = _unpack(word, cfg.layouts["alu"])
        if v["alu_opcode"] not in AluOp._value2member_map_:
            raise VTAError(f"unknown ALU opcode {v['alu_opcode']}")
        fields = {f.name for f in dataclasses.fields(AluInsn)} - set(_FLAG_FIELDS)
        vals = {k: v[k] for k in fields}
        vals.update(alu_opcode=AluOp(v["alu_opcode"]), use_imm=bool(v["use_imm"]), reset=bool(v["reset"]))
        return AluInsn(**vals, **flags)
    if opcode == Opcode.FINISH:
        return FinishInsn(**flags)
    raise VTAError(f"unknown opcode {opcode}")


def _as_bytes(data: bytes | bytearray | np.ndarray) -> bytes:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).tobytes()
    return bytes(data)


def decode_program(data: bytes | np.ndarray, cfg: VTAConfig) -> list[AnyInsn]:
    data = _as_bytes(data)
    n = INSN_BITS // 8
    if len(data) % n:
        raise VTAError(f"program size {len(data)} B is not a multiple of {n}")
    out = []
    for i in range(0, len(data), n):
        try:
            out.append(decode(data[i:i + n], cfg))
        except VTAError as e:
            raise VTAError(f"instruction {i // n}: {e}", insn_index=i // n) from None
    return out


def encode_uop(uop: Uop, cfg: VTAConfig) -> int:
    return _pack({"dst": uop.dst, "src": uop.src, "wgt": uop.wgt}, cfg.layouts["uop"], "Uop")


def decode_uop(word: int, cfg: VTAConfig) -> Uop:
    v = _unpack(int(word), cfg.layouts["uop"])
    return Uop(v["dst"], v["src"], v["wgt"])


def encode_uops(uops: Iterable[Uop], cfg: VTAConfig) -> np.ndarray:
    """Micro-ops as a ``uint32`` array (4 bytes each in DRAM, loaded by ``LOAD UOP``)."""
    return np.array([encode_uop(u, cfg) for u in uops], dtype=np.uint32)


# ---------------------------------------------------------------------------------------------
# Legality


def validate(insn: Insn, cfg: VTAConfig) -> None:
    """Raise VTAError if ``insn`` is illegal on its own (the simulator applies the same rules;
    rules that depend on micro-op contents are only checked when it executes)."""
    what = type(insn).__name__
    stage = insn.stage
    if stage == Stage.LOAD and (insn.pop_prev or insn.push_prev):
        raise VTAError(f"{what}: load-stage instruction cannot pop/push 'prev' (no stage before load)")
    if stage == Stage.STORE and (insn.pop_next or insn.push_next):
        raise VTAError(f"{what}: store-stage instruction cannot pop/push 'next' (no stage after store)")
    if isinstance(insn, FinishInsn):
        if any(getattr(insn, f) for f in _FLAG_FIELDS):
            raise VTAError("FINISH cannot carry dependency flags (synchronize with a NOP before it)")
    elif isinstance(insn, MemInsn):
        if insn.opcode not in (Opcode.LOAD, Opcode.STORE):
            raise VTAError(f"MemInsn opcode must be LOAD or STORE, got {insn.opcode!r}")
        if insn.is_nop:
            return
        if insn.opcode == Opcode.LOAD and insn.memory_type not in LOADABLE_MEM_TYPES:
            raise VTAError(f"LOAD cannot target memory type {MemType(insn.memory_type).name}")
        if insn.opcode == Opcode.STORE:
            if insn.memory_type != MemType.OUT:
                raise VTAError(f"STORE must use memory type OUT, got {MemType(insn.memory_type).name}")
            if insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
                raise VTAError("STORE cannot pad")
        depth = sram_depth(cfg, insn.memory_type)
        if insn.sram_base + insn.sram_extent > depth:
            raise VTAError(f"{insn.opcode.name} {MemType(insn.memory_type).name}: SRAM range "
                           f"[{insn.sram_base}, {insn.sram_base + insn.sram_extent}) exceeds depth {depth}")
    elif isinstance(insn, (GemmInsn, AluInsn)):
        if not 0 <= insn.uop_bgn <= insn.uop_end <= cfg.uop_depth:
            raise VTAError(f"{what}: micro-op range [{insn.uop_bgn}, {insn.uop_end}) not within "
                           f"[0, {cfg.uop_depth}]")
        if isinstance(insn, AluInsn):
            if insn.reset:
                raise VTAError("ALU: reset bit must be 0")
            if int(insn.alu_opcode) not in AluOp._value2member_map_:
                raise VTAError(f"ALU: unknown opcode {insn.alu_opcode}")


# ---------------------------------------------------------------------------------------------
# Builder


def _nop(stage: Stage) -> MemInsn:
    """A zero-size memory instruction on ``stage`` (VTA runtime ``PushNoop``)."""
    if stage == Stage.STORE:
        return MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=0, dram_base=0,
                       y_size=0, x_size=0, x_stride=0)
    mem = MemType.INP if stage == Stage.LOAD else MemType.UOP
    return MemInsn(opcode=Opcode.LOAD, memory_type=mem, sram_base=0, dram_base=0,
                   y_size=0, x_size=0, x_stride=0)


class ProgramBuilder:
    """Assemble an instruction stream; dependency tokens follow VTA's runtime (``runtime.cc``).

    ``dep_push(a, b)`` marks the last instruction if it runs on stage ``a`` (else emits a NOP on
    ``a``); ``dep_pop(a, b)`` makes the *next* instruction emitted on stage ``b`` pop the token.
    ``finish()`` appends the synchronization epilogue (store->compute and load->compute tokens)
    and FINISH. Every instruction is validated as it is added.
    """

    def __init__(self, cfg: VTAConfig):
        self.cfg = cfg
        self.insns: list[AnyInsn] = []
        self._pending: dict[Stage, dict[str, bool]] = {s: {} for s in Stage}
        self._finished = False

    # -- raw emission
    def emit(self, insn: AnyInsn) -> int:
        """Append ``insn`` (pending pops of its stage attached); returns its index."""
        if self._finished:
            raise VTAError("program already finished")
        pending = self._pending[insn.stage]
        if pending:
            if isinstance(insn, FinishInsn) or any(getattr(insn, f) for f in pending):
                self._commit_pending(insn.stage)
            else:
                insn = insn.with_deps(**pending)
                self._pending[insn.stage] = {}
        validate(insn, self.cfg)
        self.insns.append(insn)
        return len(self.insns) - 1

    def _commit_pending(self, stage: Stage) -> None:
        if self._pending[stage]:
            flags, self._pending[stage] = self._pending[stage], {}
            self.insns.append(_nop(stage).with_deps(**flags))

    def nop(self, stage: Stage) -> int:
        return self.emit(_nop(stage))

    # -- tokens
    @staticmethod
    def _check_pair(src: Stage, dst: Stage) -> None:
        if (Stage(src), Stage(dst)) not in QUEUES:
            raise VTAError(f"no token queue from {Stage(src).name} to {Stage(dst).name}")

    def dep_push(self, src: Stage, dst: Stage) -> None:
        """Push a token from ``src`` to ``dst`` after everything emitted so far on ``src``."""
        self._check_pair(src, dst)
        self._commit_pending(src)
        flag = "push_next" if src < dst else "push_prev"
        if self.insns and self.insns[-1].stage == src and not getattr(self.insns[-1], flag):
            self.insns[-1] = self.insns[-1].with_deps(**{flag: True})
            return
        self.emit(_nop(src).with_deps(**{flag: True}))

    def dep_pop(self, src: Stage, dst: Stage) -> None:
        """Make the next instruction on ``dst`` wait for a token from ``src``."""
        self._check_pair(src, dst)
        flag = "pop_prev" if src < dst else "pop_next"
        if self._pending[dst].get(flag):
            self._commit_pending(dst)
        self._pending[dst][flag] = True

    # -- instructions
    def load(self, memory_type: MemType, sram_base: int, dram_base: int, y_size: int, x_size: int,
             x_stride: int | None = None, pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> int:
        """2-D load; ``pad = (y_pad_0, y_pad_1, x_pad_0, x_pad_1)`` zero rows/columns."""
        y0, y1, x0, x1 = pad
        return self.emit(MemInsn(opcode=Opcode.LOAD, memory_type=MemType(memory_type),
                                 sram_base=sram_base, dram_base=dram_base, y_size=y_size,
                                 x_size=x_size, x_stride=x_size if x_stride is None else x_stride,
                                 y_pad_0=y0, y_pad_1=y1, x_pad_0=x0, x_pad_1=x1))

    def store(self, sram_base: int, dram_base: int, y_size: int, x_size: int,
              x_stride: int | None = None) -> int:
        return self.emit(MemInsn(opcode=Opcode.STORE, memory_type=MemType.OUT, sram_base=sram_base,
                                 dram_base=dram_base, y_size=y_size, x_size=x_size,
                                 x_stride=x_size if x_stride is None else x_stride))

    def gemm(self, uop_bgn: int, uop_end: int, iter_out: int = 1, iter_in: int = 1, *,
             reset: bool = False, dst_factor: tuple[int, int] = (0, 0),
             src_factor: tuple[int, int] = (0, 0), wgt_factor: tuple[int, int] = (0, 0)) -> int:
        """Factors are ``(outer, inner)`` pairs."""
        return self.emit(GemmInsn(reset=reset, uop_bgn=uop_bgn, uop_end=uop_end, iter_out=iter_out,
                                  iter_in=iter_in, dst_factor_out=dst_factor[0],
                                  dst_factor_in=dst_factor[1], src_factor_out=src_factor[0],
                                  src_factor_in=src_factor[1], wgt_factor_out=wgt_factor[0],
                                  wgt_factor_in=wgt_factor[1]))

    def alu(self, op: AluOp, uop_bgn: int, uop_end: int, iter_out: int = 1, iter_in: int = 1, *,
            imm: int | None = None, dst_factor: tuple[int, int] = (0, 0),
            src_factor: tuple[int, int] = (0, 0)) -> int:
        """``imm=None``: the second operand is ``acc[src]``; else the sign-extended immediate."""
        return self.emit(AluInsn(alu_opcode=AluOp(op), use_imm=imm is not None, imm=imm or 0,
                                 uop_bgn=uop_bgn, uop_end=uop_end, iter_out=iter_out, iter_in=iter_in,
                                 dst_factor_out=dst_factor[0], dst_factor_in=dst_factor[1],
                                 src_factor_out=src_factor[0], src_factor_in=src_factor[1]))

    def finish(self) -> int:
        """VTASynchronize: drain store and load into compute, then FINISH."""
        self.dep_push(Stage.STORE, Stage.COMPUTE)
        self.dep_push(Stage.LOAD, Stage.COMPUTE)
        self.dep_pop(Stage.STORE, Stage.COMPUTE)
        self.dep_pop(Stage.LOAD, Stage.COMPUTE)
        index = self.emit(FinishInsn())
        self._finished = True
        return index

    def encode(self) -> bytes:
        return encode_program(self.insns, self.cfg)

    def disasm(self) -> str:
        return disasm_insns(self.insns)

    def __len__(self) -> int:
        return len(self.insns)


# ---------------------------------------------------------------------------------------------
# Disassembly


def _deps_text(insn: Insn) -> str:
    parts = [f"pop {q}" for q in insn.popped_queues()] + [f"push {q}" for q in insn.pushed_queues()]
    return f"  [{', '.join(parts)}]" if parts else ""


def format_insn(insn: Insn) -> str:
    """One line describing ``insn`` (no index or token counts)."""
    if isinstance(insn, MemInsn):
        if insn.is_nop:
            return f"NOP-{insn.stage.name}" + _deps_text(insn)
        text = (f"{insn.opcode.name:<5} {insn.memory_type.name:<8} sram={insn.sram_base:#06x} "
                f"dram={insn.dram_base:#010x} y={insn.y_size} x={insn.x_size} stride={insn.x_stride}")
        if insn.y_pad_0 or insn.y_pad_1 or insn.x_pad_0 or insn.x_pad_1:
            text += f" pad=y[{insn.y_pad_0},{insn.y_pad_1}] x[{insn.x_pad_0},{insn.x_pad_1}]"
        return text + _deps_text(insn)
    if isinstance(insn, (GemmInsn, AluInsn)):
        if isinstance(insn, GemmInsn):
            head = "GEMM  RESET" if insn.reset else "GEMM"
            fac = lambda o: (f"acc+{getattr(insn, 'dst_factor_' + o)} inp+{getattr(insn, 'src_factor_' + o)} "  # noqa: E731
                             f"wgt+{getattr(insn, 'wgt_factor_' + o)}")
        else:
            operand = f"imm={insn.imm}" if insn.use_imm else "src"
            head = f"ALU   {insn.alu_opcode.name} {operand}" + (" reset=1" if insn.reset else "")
            fac = lambda o: f"dst+{getattr(insn, 'dst_factor_' + o)} src+{getattr(insn, 'src_factor_' + o)}"  # noqa: E731
        return (f"{head:<14} uop[{insn.uop_bgn}:{insn.uop_end}] out={insn.iter_out}({fac('out')}) "
                f"in={insn.iter_in}({fac('in')})" + _deps_text(insn))
    if isinstance(insn, FinishInsn):
        return "FINISH" + _deps_text(insn)
    raise VTAError(f"not a VTA instruction: {insn!r}")


def disasm_insns(insns: Sequence[Insn]) -> str:
    """One line per instruction with running token counts in program order, like VTA's
    ``DumpInsn`` (a negative count means a pop precedes its push in program order)."""
    counts = dict.fromkeys(QUEUE_DESCRIPTIONS, 0)
    lines = []
    for i, insn in enumerate(insns):
        for q in insn.popped_queues():
            counts[q] -= 1
        for q in insn.pushed_queues():
            counts[q] += 1
        tokens = " ".join(f"{q}={n}" for q, n in counts.items())
        lines.append(f"{i:5d}  {format_insn(insn):<96} | {tokens}")
    return "\n".join(lines)


def disasm(program: bytes | np.ndarray, cfg: VTAConfig | None = None) -> str:
    """Disassemble encoded instructions; undecodable ones print as ``ILLEGAL`` with the reason."""
    cfg = cfg or VTAConfig()
    data = _as_bytes(program)
    n = INSN_BITS // 8
    if len(data) % n:
        raise VTAError(f"program size {len(data)} B is not a multiple of {n}")
    insns, lines_illegal = [], {}
    for i in range(0, len(data), n):
        try:
            insns.append(decode(data[i:i + n], cfg))
        except VTAError as e:
            lines_illegal[len(insns)] = f"ILLEGAL ({e}) raw=0x{int.from_bytes(data[i:i + n], 'little'):032x}"
            insns.append(None)
    if not lines_illegal:
        return disasm_insns(insns)
    out = []
    for i, insn in enumerate(insns):
        out.append(f"{i:5d}  {lines_illegal[i]}" if insn is None else f"{i:5d}  {format_insn(insn)}")
    return "\n".join(out)


def disasm_uops(words: Iterable[int], cfg: VTAConfig) -> str:
    return "\n".join(f"{i:5d}  {decode_uop(w, cfg)}" for i, w in enumerate(words))


def main_disasm(path: str | Path, config_path: str | Path | None = None) -> str:
    """``accelc vta disasm PATH [--config CFG]``: PATH holds raw 16-byte instructions; CFG is a
    JSON file, JSON text or a preset name (default: the default config)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise VTAError(f"cannot read {path}: {e}") from e
    return disasm(data, resolve_config(config_path))


__all__ = [
    "Opcode", "MemType", "AluOp", "Stage", "QUEUES", "QUEUE_DESCRIPTIONS", "elem_bytes", "sram_depth",
    "Insn", "MemInsn", "GemmInsn", "AluInsn", "FinishInsn", "Uop", "encode", "decode",
    "encode_program", "decode_program", "encode_uop", "decode_uop", "encode_uops", "validate",
    "ProgramBuilder", "format_insn", "disasm", "disasm_insns", "disasm_uops", "main_disasm",
]
