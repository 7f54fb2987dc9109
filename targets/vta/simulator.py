"""ctypes binding of the C++ VTA simulator (``sim/vta_sim.h``) plus a DRAM-image helper.

Finding the library (:func:`find_library`), first match wins:

1. ``$ACCELC_VTA_SIM_LIB``: an explicit path, used as is (ABI version still checked).
2. A built library whose compiled-in source hash equals the hash of ``sim/vta_sim.{h,cc}``
   next to this file (any library is accepted when the sources are absent): next to this file
   (installed wheel), ``accelc/targets/vta/`` on ``sys.path`` (editable install), and the
   repository's ``build/vta_sim/`` (standalone CMake build) or ``build/*/targets/vta/sim/``
   (scikit-build-core build tree).
3. Otherwise it is built on demand with CMake into ``$ACCELC_VTA_SIM_CACHE`` (default
   ``<repo>/build/vta_sim_cache/<hash>/`` in a checkout, else ``~/.cache/accelc/vta_sim/<hash>``),
   once per source hash, atomically (concurrent processes are safe).

So a checkout never runs a stale simulator after ``vta_sim.cc`` changes: the hash differs and
a fresh build happens on first use (~10 s).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from .config import VTAConfig, VTAError
from .isa import Insn, MemType, ProgramBuilder, Uop, elem_bytes, encode_program, encode_uops

ABI_VERSION = 1
SIM_DIR = Path(__file__).resolve().parent / "sim"
SIM_SOURCES = ("vta_sim.h", "vta_sim.cc")  # order matters for the hash (see CMakeLists.txt)
LIB_FILENAME = {"darwin": "libaccelc_vta_sim.dylib", "win32": "accelc_vta_sim.dll"}.get(
    sys.platform, "libaccelc_vta_sim.so")


class SimStatus(IntEnum):
    """``vta_sim_status`` codes."""

    OK = 0
    ARG = 1
    CONFIG = 2
    DECODE = 3
    SRAM = 4
    DRAM = 5
    DEADLOCK = 6
    FINISH = 7
    PROGRAM = 8
    LIMIT = 9
    HAZARD = 10


# ---- C structs (must match vta_sim.h) ---------------------------------------------------------

class _Config(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "log_inp_width", "log_wgt_width", "log_acc_width", "log_batch", "log_block_in",
        "log_block_out", "log_uop_buff_size", "log_inp_buff_size", "log_wgt_buff_size",
        "log_acc_buff_size", "log_bus_width", "dma_latency", "gemm_pipeline_depth",
        "alu_pipeline_depth", "gemm_ii", "alu_ii", "cmd_queue_depth", "dep_queue_depth")]


class _Options(ctypes.Structure):
    _fields_ = [("force_serial", ctypes.c_int32), ("strict_hazards", ctypes.c_int32),
                ("max_uop_iters", ctypes.c_uint64), ("trace", ctypes.POINTER(ctypes.c_uint64))]


_COUNTERS = ("cycles", "inp_load_nbytes", "wgt_load_nbytes", "acc_load_nbytes", "uop_load_nbytes",
             "out_store_nbytes", "insn_load_nbytes", "gemm_counter", "gemm_reset_counter",
             "alu_counter", "acc_raw_hazards", "n_load", "n_store", "n_gemm", "n_alu", "n_finish",
             "n_nop")


class _Stats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in _COUNTERS] + [
        ("busy", ctypes.c_uint64 * 3), ("stall", ctypes.c_uint64 * 3),
        ("n_insns", ctypes.c_uint64 * 3), ("gemm_utilization", ctypes.c_double),
        ("error_insn", ctypes.c_int64)]


_FIELD_NAMES = ("opcode", "pop_prev", "pop_next", "push_prev", "push_next", "memory_type",
                "sram_base", "dram_base", "y_size", "x_size", "x_stride", "y_pad_0", "y_pad_1",
                "x_pad_0", "x_pad_1", "reset", "uop_bgn", "uop_end", "iter_out", "iter_in",
                "dst_factor_out", "dst_factor_in", "src_factor_out", "src_factor_in",
                "wgt_factor_out", "wgt_factor_in", "alu_opcode", "use_imm", "imm")


class _Fields(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in _FIELD_NAMES]


def _c_config(cfg: VTAConfig) -> _Config:
    return _Config(*(getattr(cfg, f.upper()) for f, _ in _Config._fields_))


# ---- finding / building the library ------------------------------------------------------------

def source_hash() -> str | None:
    """Hash of the simulator sources next to this file (None when they are not shipped)."""
    paths = [SIM_DIR / name for name in SIM_SOURCES]
    if not all(p.is_file() for p in paths):
        return None
    digests = "".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)
    return hashlib.sha256(digests.encode()).hexdigest()


def _repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "targets").is_dir() else None


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.vta_sim_abi_version.restype = ctypes.c_int
    lib.vta_sim_source_hash.restype = ctypes.c_char_p
    lib.vta_sim_run.restype = ctypes.c_int
    lib.vta_sim_run.argtypes = [
        ctypes.POINTER(_Config), ctypes.POINTER(_Options), ctypes.c_void_p, ctypes.c_uint64,
        ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(_Stats), ctypes.c_char_p, ctypes.c_size_t]
    lib.vta_sim_decode.restype = ctypes.c_int
    lib.vta_sim_decode.argtypes = [ctypes.POINTER(_Config), ctypes.c_char_p,
                                   ctypes.POINTER(_Fields), ctypes.c_char_p, ctypes.c_size_t]
    lib.vta_sim_decode_uop.restype = ctypes.c_int
    lib.vta_sim_decode_uop.argtypes = [ctypes.POINTER(_Config), ctypes.c_uint32] + [
        ctypes.POINTER(ctypes.c_uint32)] * 3 + [ctypes.c_char_p, ctypes.c_size_t]
    return lib


def _acceptable(path: Path, want_hash: str | None) -> ctypes.CDLL | None:
    try:
        lib = _open(path)
    except (OSError, AttributeError):
        return None
    if lib.vta_sim_abi_version() != ABI_VERSION:
        return None
    if want_hash is not None and lib.vta_sim_source_hash().decode() != want_hash:
        return None
    return lib


def _candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    out = [here / LIB_FILENAME]
    out += [Path(p) / "accelc" / "targets" / "vta" / LIB_FILENAME for p in sys.path if p]
    root = _repo_root()
    if root is not None:
        out.append(root / "build" / "vta_sim" / LIB_FILENAME)
        out += sorted((root / "build").glob(f"*/targets/vta/sim/{LIB_FILENAME}"))
    return [p for p in dict.fromkeys(out) if p.is_file()]


def _cache_dir(digest: str) -> Path:
    if os.environ.get("ACCELC_VTA_SIM_CACHE"):
        base = Path(os.environ["ACCELC_VTA_SIM_CACHE"])
    elif _repo_root() is not None:
        base = _repo_root() / "build" / "vta_sim_cache"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "accelc" / "vta_sim"
    return base / digest[:16]


def build_library(dest_dir: Path, jobs: int = 2) -> Path:
    """Configure and build the simulator with CMake; the library lands atomically in dest_dir."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise VTAError("the VTA simulator library is not built and cmake is not on PATH; build it "
                       "with `cmake -S targets/vta/sim -B build/vta_sim && cmake --build build/vta_sim`"
                       " or set ACCELC_VTA_SIM_LIB")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=dest_dir))
    try:
        for cmd in ([cmake, "-S", str(SIM_DIR), "-B", str(tmp), "-DCMAKE_BUILD_TYPE=Release"],
                    [cmake, "--build", str(tmp), "--config", "Release", "-j", str(jobs)]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise VTAError(f"building the VTA simulator failed: {' '.join(cmd)}\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        built = next(iter(sorted(tmp.rglob(LIB_FILENAME))), None)
        if built is None:
            raise VTAError(f"CMake did not produce {LIB_FILENAME} in {tmp}")
        final = dest_dir / LIB_FILENAME
        os.replace(built, final)  # atomic: a concurrent loader sees the old or the new file
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_LIB: ctypes.CDLL | None = None
_LIB_PATH: Path | None = None


def find_library(build: bool = True) -> Path:
    """Path of a usable simulator library (see the module docstring); builds it if needed."""
    _load(build)
    assert _LIB_PATH is not None
    return _LIB_PATH


def _load(build: bool = True) -> ctypes.CDLL:
    global _LIB, _LIB_PATH
    if _LIB is not None:
        return _LIB
    explicit = os.environ.get("ACCELC_VTA_SIM_LIB")
    if explicit:
        lib = _acceptable(Path(explicit), None)
        if lib is None:
            raise VTAError(f"ACCELC_VTA_SIM_LIB={explicit} is not a loadable simulator "
                           f"with ABI version {ABI_VERSION}")
        _LIB, _LIB_PATH = lib, Path(explicit)
        return lib
    digest = source_hash()
    for path in _candidates():
        lib = _acceptable(path, digest)
        if lib is not None:
            _LIB, _LIB_PATH = lib, path
            return lib
    if digest is None:
        raise VTAError(f"no VTA simulator library ({LIB_FILENAME}) found next to {__file__} "
                       "and no sources to build it from")
    cached = _cache_dir(digest) / LIB_FILENAME
    lib = _acceptable(cached, digest) if cached.is_file() else None
    if lib is None:
        if not build:
            raise VTAError("the VTA simulator library is not built (find_library(build=False))")
        cached = build_library(_cache_dir(digest))
        lib = _acceptable(cached, digest)
        if lib is None:
            raise VTAError(f"freshly built {cached} does not report source hash {digest}")
    _LIB, _LIB_PATH = lib, cached
    return lib


# ---- results -----------------------------------------------------------------------------------

ENGINES = ("load", "compute", "store")


@dataclass(frozen=True)
class EngineStats:
    busy: int  # cycles executing
    stall: int  # cycles waiting (fetch, tokens, full token queue) with work left
    n_insns: int


@dataclass(frozen=True)
class SimStats:
    """Simulator counters: fsim's profiler counters plus the cycle model's."""

    cycles: int
    inp_load_nbytes: int
    wgt_load_nbytes: int
    acc_load_nbytes: int
    uop_load_nbytes: int
    out_store_nbytes: int
    insn_load_nbytes: int
    gemm_counter: int  # micro-op iterations of non-reset GEMMs
    gemm_reset_counter: int
    alu_counter: int
    acc_raw_hazards: int
    n_load: int
    n_store: int
    n_gemm: int
    n_alu: int
    n_finish: int
    n_nop: int
    engines: dict[str, EngineStats]
    gemm_utilization: float  # gemm_counter / cycles
    macs: int  # gemm_counter * BATCH * BLOCK_IN * BLOCK_OUT
    freq_mhz: float

    @property
    def load_nbytes(self) -> int:
        return self.inp_load_nbytes + self.wgt_load_nbytes + self.acc_load_nbytes + self.uop_load_nbytes

    @property
    def seconds(self) -> float:
        return self.cycles / (self.freq_mhz * 1e6)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["load_nbytes"] = self.load_nbytes
        return d

    def summary(self) -> str:
        lines = [f"cycles {self.cycles} ({self.seconds * 1e3:.3f} ms @ {self.freq_mhz:g} MHz), "
                 f"GEMM utilization {100 * self.gemm_utilization:.1f}% ({self.gemm_counter} uops, "
                 f"{self.macs} MACs), ALU {self.alu_counter} uops",
                 f"bytes loaded inp {self.inp_load_nbytes} wgt {self.wgt_load_nbytes} "
                 f"acc {self.acc_load_nbytes} uop {self.uop_load_nbytes}, stored {self.out_store_nbytes}"]
        for name, e in self.engines.items():
            lines.append(f"{name:<8} busy {e.busy:>10}  stall {e.stall:>10}  insns {e.n_insns}")
        return "\n".join(lines)


def _stats(s: _Stats, cfg: VTAConfig) -> SimStats:
    return SimStats(
        **{name: int(getattr(s, name)) for name in _COUNTERS},
        engines={name: EngineStats(int(s.busy[k]), int(s.stall[k]), int(s.n_insns[k]))
                 for k, name in enumerate(ENGINES)},
        gemm_utilization=float(s.gemm_utilization), macs=int(s.gemm_counter) * cfg.macs_per_uop,
        freq_mhz=cfg.FREQ_MHZ)


@dataclass(frozen=True)
class SimResult:
    dram: np.ndarray  # uint8 DRAM image after the run
    stats: SimStats
    trace: np.ndarray | None = None  # (n_insns, 2) start/completion cycle, if requested


Program = Union[bytes, bytearray, np.ndarray, ProgramBuilder, Sequence[Insn]]


def _program_bytes(program: Program, cfg: VTAConfig) -> bytes:
    if isinstance(program, ProgramBuilder):
        return program.encode()
    if isinstance(program, (bytes, bytearray)):
        return bytes(program)
    if isinstance(program, np.ndarray):
        return np.ascontiguousarray(program).view(np.uint8).tobytes()
    return encode_program(program, cfg)


class Simulator:
    """Runs VTA programs on the C++ simulator for one config."""

    def __init__(self, cfg: VTAConfig | None = None):
        self.cfg = cfg or VTAConfig()
        self._lib = _load()
        self._ccfg = _c_config(self.cfg)

    def run(self, program: Program, dram: np.ndarray | DramImage, *, force_serial: bool = False,
            strict_hazards: bool = False, max_uop_iters: int = 0, trace: bool = False,
            inplace: bool = False) -> SimResult:
        """Execute ``program`` (encoded bytes, instructions or a builder) to FINISH on ``dram``.

        ``dram`` is copied unless ``inplace`` (then a contiguous uint8 array, or a DramImage, is
        updated). Raises VTAError carrying the simulator's code, message, offending instruction
        and partial stats.
        """
        insns = _program_bytes(program, self.cfg)
        if len(insns) % 16:
            raise VTAError(f"program size {len(insns)} B is not a multiple of 16")
        n = len(insns) // 16
        image = dram.data if isinstance(dram, DramImage) else dram
        if not isinstance(image, np.ndarray):
            raise VTAError("dram must be a numpy array or a DramImage")
        if inplace:
            if not (image.flags.c_contiguous and image.flags.writeable):
                raise VTAError("inplace=True needs a writeable C-contiguous array")
            buf = image.reshape(-1).view(np.uint8)
        else:
            buf = np.ascontiguousarray(image).reshape(-1).view(np.uint8).copy()
        opts = _Options(int(force_serial), int(strict_hazards), int(max_uop_iters), None)
        trace_buf = None
        if trace:
            trace_buf = np.zeros(2 * n, dtype=np.uint64)
            opts.trace = trace_buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64))
        stats = _Stats()
        err = ctypes.create_string_buffer(4096)
        code = self._lib.vta_sim_run(ctypes.byref(self._ccfg), ctypes.byref(opts), insns, n,
                                     buf.ctypes.data if buf.size else None, buf.size,
                                     ctypes.byref(stats), err, len(err))
        py_stats = _stats(stats, self.cfg)
        if code != SimStatus.OK:
            raise VTAError(f"VTA simulator: {err.value.decode(errors='replace')}",
                           code=code, insn_index=int(stats.error_insn), stats=py_stats)
        return SimResult(buf, py_stats, None if trace_buf is None else trace_buf.reshape(n, 2))

    def decode_fields(self, insn: bytes) -> dict[str, int]:
        """The C++ decoder's view of one encoded instruction (for cross-checking isa.py)."""
        fields = _Fields()
        err = ctypes.create_string_buffer(512)
        code = self._lib.vta_sim_decode(ctypes.byref(self._ccfg), bytes(insn), ctypes.byref(fields),
                                        err, len(err))
        if code:
            raise VTAError(f"VTA simulator: {err.value.decode()}", code=code)
        return {name: int(getattr(fields, name)) for name in _FIELD_NAMES}

    def decode_uop(self, word: int) -> Uop:
        out = [ctypes.c_uint32() for _ in range(3)]
        err = ctypes.create_string_buffer(512)
        code = self._lib.vta_sim_decode_uop(ctypes.byref(self._ccfg), int(word),
                                            *(ctypes.byref(v) for v in out), err, len(err))
        if code:
            raise VTAError(f"VTA simulator: {err.value.decode()}", code=code)
        return Uop(*(v.value for v in out))


# ---- DRAM image --------------------------------------------------------------------------------

class DramImage:
    """A growable DRAM byte image with regions addressed in elements of their memory type.

    ``put(MemType.INP, x)`` aligns the next free byte to the element size, writes ``x`` (shape
    ``(n, *elem_shape)``, or anything with a multiple of the element's values) and returns the
    element index to use as ``dram_base``.
    """

    def __init__(self, cfg: VTAConfig, align: int = 64):
        self.cfg = cfg
        self.align = align
        self.data = np.zeros(0, dtype=np.uint8)

    def elem_shape(self, mem_type: MemType) -> tuple[int, ...]:
        c = self.cfg
        return {MemType.UOP: (), MemType.INP: c.inp_elem_shape, MemType.WGT: c.wgt_elem_shape,
                MemType.ACC: c.acc_elem_shape, MemType.OUT: c.out_elem_shape,
                MemType.ACC_8BIT: c.out_elem_shape}[MemType(mem_type)]

    def dtype(self, mem_type: MemType) -> np.dtype:
        c = self.cfg
        bits = {MemType.INP: c.inp_width, MemType.WGT: c.wgt_width, MemType.ACC: c.acc_width,
                MemType.OUT: c.out_width, MemType.ACC_8BIT: c.out_width}
        if MemType(mem_type) == MemType.UOP:
            return np.dtype("<u4")
        return np.dtype(f"<i{bits[MemType(mem_type)] // 8}")

    def alloc(self, mem_type: MemType, n_elems: int) -> int:
        eb = elem_bytes(self.cfg, mem_type)
        step = eb * self.align // np.gcd(eb, self.align)  # lcm: element- and cache-aligned
        start = -(-self.data.size // step) * step
        self.data = np.concatenate([self.data, np.zeros(start + n_elems * eb - self.data.size, np.uint8)])
        return start // eb

    def put(self, mem_type: MemType, values: np.ndarray | Sequence[Uop]) -> int:
        if MemType(mem_type) == MemType.UOP and not isinstance(values, np.ndarray):
            values = encode_uops(values, self.cfg)
        arr = self._as_elems(mem_type, values)
        base = self.alloc(mem_type, arr.shape[0])
        self.write(mem_type, base, arr)
        return base

    def _as_elems(self, mem_type: MemType, values) -> np.ndarray:
        dtype = self.dtype(mem_type)
        arr = np.asarray(values)
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise VTAError(f"{MemType(mem_type).name} values outside {dtype} range")
        shape = self.elem_shape(mem_type)
        per = int(np.prod(shape)) if shape else 1
        if arr.size % per:
            raise VTAError(f"{arr.size} values are not whole {MemType(mem_type).name} elements of {shape}")
        return arr.astype(dtype).reshape((arr.size // per,) + shape)

    def write(self, mem_type: MemType, base: int, values: np.ndarray) -> None:
        arr = self._as_elems(mem_type, values)
        eb = elem_bytes(self.cfg, mem_type)
        lo, hi = base * eb, (base + arr.shape[0]) * eb
        if hi > self.data.size:
            raise VTAError(f"write of [{lo}, {hi}) beyond the DRAM image ({self.data.size} B)")
        self.data[lo:hi] = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)

    def read(self, mem_type: MemType, base: int, n_elems: int, data: np.ndarray | None = None) -> np.ndarray:
        """``n_elems`` elements from this image, or from ``data`` (e.g. ``SimResult.dram``)."""
        src = self.data if data is None else data
        eb = elem_bytes(self.cfg, mem_type)
        raw = np.asarray(src, dtype=np.uint8)[base * eb:(base + n_elems) * eb]
        if raw.size != n_elems * eb:
            raise VTAError(f"read of {n_elems} {MemType(mem_type).name} elements at {base} beyond the image")
        return raw.view(self.dtype(mem_type)).reshape((n_elems,) + self.elem_shape(mem_type)).copy()

    @property
    def nbytes(self) -> int:
        return int(self.data.size)


__all__ = ["Simulator", "SimResult", "SimStats", "EngineStats", "SimStatus", "DramImage",
           "find_library", "build_library", "source_hash"]
