"""`accelc vta disasm` on an encoded program, and its one-line error on a bad file."""

import subprocess
import sys

from accelc.targets.vta import VTAConfig
from accelc.targets.vta.isa import MemType, ProgramBuilder, encode_program


def accelc(*args):
    return subprocess.run([sys.executable, "-m", "accelc", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_disasm_prints_one_line_per_instruction(tmp_path):
    cfg = VTAConfig()
    builder = ProgramBuilder(cfg)
    builder.load(MemType.INP, 0, 0, 1, 1)
    builder.finish()
    program = tmp_path / "prog.bin"
    program.write_bytes(encode_program(builder.insns, cfg))
    result = accelc("vta", "disasm", program)
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stdout.splitlines() if l.strip()]
    assert sum("LOAD" in l for l in lines) >= 1
    assert sum("FINISH" in l for l in lines) == 1


def test_disasm_rejects_a_torn_program(tmp_path):
    program = tmp_path / "torn.bin"
    program.write_bytes(b"\x01" * 17)  # not a whole number of 16-byte instructions
    result = accelc("vta", "disasm", program)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
