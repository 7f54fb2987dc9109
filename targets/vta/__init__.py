"""VTA-like accelerator target: hardware config, ISA, and the C++ simulator binding.

- :mod:`.config`: :class:`VTAConfig` (VTA's ``vta_config.json`` parameters and everything derived)
- :mod:`.isa`: instruction/micro-op dataclasses, encode/decode, :class:`ProgramBuilder`, disassembler
- :mod:`.simulator`: :class:`Simulator` (ctypes binding of ``sim/``), :class:`DramImage`
- :mod:`.reference`: numpy reference of the arithmetic and a program-order interpreter
"""

from .config import DEFAULT_CONFIG, PRESETS, VTAConfig, VTAError, resolve_config
from .isa import (AluInsn, AluOp, FinishInsn, GemmInsn, MemInsn, MemType, Opcode, ProgramBuilder,
                  Stage, Uop, decode, decode_program, disasm, encode, encode_program, main_disasm)
from .simulator import DramImage, SimResult, SimStats, SimStatus, Simulator

__all__ = [
    "VTAConfig", "VTAError", "DEFAULT_CONFIG", "PRESETS", "resolve_config",
    "Opcode", "MemType", "AluOp", "Stage", "MemInsn", "GemmInsn", "AluInsn", "FinishInsn", "Uop",
    "encode", "decode", "encode_program", "decode_program", "disasm", "main_disasm",
    "ProgramBuilder", "Simulator", "SimResult", "SimStats", "SimStatus", "DramImage",
]
