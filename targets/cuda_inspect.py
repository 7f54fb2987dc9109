"""Checking CUDA builds without a GPU: the scheduled IR and the exported artifact.

- ``unbound_kernels(mod)``: PrimFuncs that are not launched over blocks and threads.
- ``cross_thread_local_reads(mod)``: registers (``local`` buffers) one thread reads where
  another wrote, the miscompile stock dlight makes on ShuffleNet (see cuda._reduction_rule);
  exact, by enumerating the first thread block.
- ``read_cuda_modules(path)``: the CUDA modules serialized in an artifact, their kernels with
  launch tags and the fatbin entries (SASS/PTX, arch), read from the file.
"""

from __future__ import annotations

from dataclasses import dataclass


def unbound_kernels(mod) -> list[str]:
    """Names of the PrimFuncs in ``mod`` (a lowered Relax module, before ``relax.build``) that
    are not thread-bound GPU kernels; empty when every kernel is.

    Thread-bound: the function launches over ``blockIdx.*`` and ``threadIdx.*`` loops, and every
    block runs inside a ``blockIdx.*`` loop. (A block may sit outside the ``threadIdx`` loops:
    dlight puts a reduction's epilogue there, after the cross-thread reduction, and every
    thread of the block runs it.) A block outside every binding would run sequentially over
    the whole grid in one thread, or not build at all.
    """
    import tvm
    from tvm import s_tir, tirx

    bad = []
    for gvar, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or not isinstance(func.body, s_tir.SBlockRealize):
            continue
        sch = tvm.s_tir.Schedule(func)
        launched, every_block_in_grid = set(), True
        for block in _leaf_blocks(sch, sch.get_sblock(func.body.block.name_hint)):
            tags = set()
            for loop in sch.get_loops(block):
                binding = sch.get(loop).thread_binding
                if binding is not None:
                    tags.add(str(binding.thread_tag).split(".")[0])
            launched |= tags
            every_block_in_grid &= "blockIdx" in tags
        if not every_block_in_grid or not {"blockIdx", "threadIdx"} <= launched:
            bad.append(gvar.name_hint)
    return bad


def _leaf_blocks(sch, block) -> list:
    children = sch.get_child_blocks(block)
    if not children:
        return [block]
    return [leaf for child in children for leaf in _leaf_blocks(sch, child)]


def cross_thread_local_reads(mod, max_points: int = 1 << 22) -> list[str]:
    """``"kernel: buffer (read in block)"`` for each ``local`` (per-thread register) buffer that
    a thread reads where another thread wrote it, in the scheduled PrimFuncs of ``mod``.

    A sequential reading of the block-level IR cannot see this (the schedule is "correct" as
    blocks), but on the GPU each thread has its own copy, so such a read returns garbage.
    Checked exactly by enumeration, for the first thread block (blockIdx = 0): every iteration
    of each accessing block gives (element, thread); a read is fine when the element was
    written in each thread that runs the read (a thread index the block is not bound to ranges
    over the whole launch). Accesses to ranges, and blocks too large to enumerate
    (``max_points`` iterations x threads), are skipped.
    """
    import numpy as np
    from tvm import s_tir, tirx

    found = []
    for gvar, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc) or not isinstance(func.body, s_tir.SBlockRealize):
            continue
        leaves = []
        _walk(func.body.block.body, [], leaves)
        extents = {}
        for loops, _ in leaves:
            for loop in loops:
                tag = _thread_tag(loop)
                if tag.startswith("threadIdx.") and isinstance(loop.extent, tirx.IntImm):
                    extents[tag] = int(loop.extent)
        local_bufs = {}
        for _, realize in leaves:
            for region in list(realize.block.reads) + list(realize.block.writes):
                if _scope(region.source) == "local":
                    local_bufs[region.source.name] = region.source
        for name, buf in local_bufs.items():
            written, readers = [], []
            for loops, realize in leaves:
                writes = any(r.source.same_as(buf) for r in realize.block.writes)
                if writes:
                    keys = _access_keys(loops, realize, buf, "writes", extents, max_points, np)
                    if keys is None:
                        written = None
                        break
                    written.append(keys)
                elif any(r.source.same_as(buf) for r in realize.block.reads):
                    readers.append((loops, realize))
            if written is None or not written:
                continue
            written = np.unique(np.concatenate(written))
            for loops, realize in readers:
                keys = _access_keys(loops, realize, buf, "reads", extents, max_points, np)
                if keys is not None and not np.isin(keys, written, assume_unique=False).all():
                    found.append(f"{gvar.name_hint}: {name} (read in {realize.block.name_hint})")
                    break
    return found


def _thread_tag(loop) -> str:
    return str(loop.thread_binding.thread_tag) if loop.thread_binding is not None else ""


def _access_keys(loops, realize, buf, kind, extents, max_points, np):
    """element * threads + thread, for every access of one block to ``buf`` at blockIdx = 0
    (numpy int64 array), or None where that cannot be enumerated."""
    from tvm import tirx

    env, axes, shape = {}, [], []
    for loop in loops:
        tag = _thread_tag(loop)
        if tag.startswith("blockIdx."):
            env[loop.loop_var] = np.int64(0)
        elif isinstance(loop.extent, tirx.IntImm) and isinstance(loop.min, tirx.IntImm):
            axes.append((loop.loop_var, tag, int(loop.min)))
            shape.append(int(loop.extent))
        else:
            return None
    tags = sorted(extents)
    free = [t for t in tags if t not in {tag for _, tag, _ in axes}]
    n_free = int(np.prod([extents[t] for t in free] or [1]))
    n = int(np.prod(shape or [1]))
    if n * n_free > max_points:
        return None
    grids = np.meshgrid(*[np.arange(k, dtype=np.int64) for k in shape], indexing="ij")
    for (var, _, lo), grid in zip(axes, grids):
        env[var] = grid.ravel() + lo
    block = realize.block
    regions = [r for r in getattr(block, kind) if r.source.same_as(buf)]
    try:
        for iv, value in zip(block.iter_vars, realize.iter_values):
            env[iv.var] = _eval(value, env, np)
        mask = np.broadcast_to(_eval(realize.predicate, env, np), (n,)).astype(bool)
        if any(not _is_one(r.extent) for r in regions[0].region):
            return None
        index = [np.broadcast_to(_eval(r.min, env, np), (n,)) for r in regions[0].region]
    except _NotEvaluable:
        return None
    dims = [int(d) for d in buf.shape]
    element = np.ravel_multi_index([i[mask] for i in index], dims, mode="clip")
    # thread id = sum over tags of value * stride; free tags range over the whole launch
    strides, stride = {}, 1
    for tag in tags:
        strides[tag] = stride
        stride *= extents[tag]
    thread = np.zeros(int(mask.sum()), np.int64)
    for (var, tag, _), grid in zip(axes, grids):
        if tag in strides:
            thread = thread + (grid.ravel()[mask] + 0) * strides[tag]
    offsets = np.zeros(1, np.int64)
    for tag in free:
        offsets = (offsets[:, None] + np.arange(extents[tag], dtype=np.int64)[None, :] * strides[tag]).ravel()
    return ((element * stride + thread)[:, None] + offsets[None, :]).ravel()


def _walk(stmt, loops, leaves) -> None:
    """Collect (enclosing loops, SBlockRealize) for every block without child blocks."""
    from tvm import s_tir, tirx

    if isinstance(stmt, tirx.For):
        _walk(stmt.body, loops + [stmt], leaves)
    elif isinstance(stmt, tirx.SeqStmt):
        for child in stmt.seq:
            _walk(child, loops, leaves)
    elif isinstance(stmt, s_tir.SBlockRealize):
        inner = []
        _walk(stmt.block.body, [], inner)
        if stmt.block.init is not None:
            _walk(stmt.block.init, [], inner)
        if inner:
            leaves.extend((loops + sub, r) for sub, r in inner)
        else:
            leaves.append((loops, stmt))
    elif isinstance(stmt, (tirx.IfThenElse,)):
        _walk(stmt.then_case, loops, leaves)
        if stmt.else_case is not None:
            _walk(stmt.else_case, loops, leaves)
    elif hasattr(stmt, "body") and not isinstance(stmt, s_tir.SBlock):
        _walk(stmt.body, loops, leaves)


def _scope(tensor) -> str:
    scope = tensor.scope
    return str(scope() if callable(scope) else scope)


class _NotEvaluable(Exception):
    pass


def _is_one(expr) -> bool:
    from tvm import tirx

    return isinstance(expr, tirx.IntImm) and int(expr) == 1


def _eval(expr, env, np):
    """Evaluate an integer TIR expression over numpy arrays of loop values."""
    from tvm import tirx

    if isinstance(expr, tirx.IntImm):
        return np.int64(expr.value)
    if isinstance(expr, tirx.Var):
        for var, value in env.items():
            if var.same_as(expr):
                return value
        raise _NotEvaluable(str(expr))
    binary = {
        tirx.Add: np.add, tirx.Sub: np.subtract, tirx.Mul: np.multiply,
        tirx.FloorDiv: np.floor_divide, tirx.FloorMod: np.mod, tirx.Min: np.minimum, tirx.Max: np.maximum,
        tirx.LT: np.less, tirx.EQ: np.equal, tirx.And: np.logical_and,
    }
    for node_type, fn in binary.items():
        if isinstance(expr, node_type):
            return fn(_eval(expr.a, env, np), _eval(expr.b, env, np))
    if isinstance(expr, tirx.Cast):
        return _eval(expr.value, env, np)
    if hasattr(tirx, "LE") and isinstance(expr, tirx.LE):
        return np.less_equal(_eval(expr.a, env, np), _eval(expr.b, env, np))
    raise _NotEvaluable(type(expr).__name__)


@dataclass(frozen=True)
class KernelImage:
    """One entry of a CUDA fatbin: ``kind`` is "sass" (an ELF cubin) or "ptx"."""

    kind: str
    arch: str  # sm_XY
    compressed: bool


@dataclass(frozen=True)
class CudaModuleInfo:
    """A CUDA device module as serialized inside an exported artifact."""

    fmt: str  # what TVM stored: "cubin" (also used for fatbins), "ptx", or "cuda" (source)
    kernels: dict  # kernel name -> tuple of launch parameter tags (blockIdx.x, threadIdx.x, ...)
    images: tuple  # KernelImage entries of the compiled code (empty for PTX text or source)

    def unbound(self) -> list[str]:
        """Kernels launched without a block or a thread index."""
        return [
            name for name, tags in self.kernels.items()
            if not any(t.startswith("blockIdx.") for t in tags)
            or not any(t.startswith("threadIdx.") for t in tags)
        ]


_FATBIN_MAGIC = 0xBA55ED50
_FATBIN_KINDS = {1: "ptx", 2: "sass"}


def fatbin_images(code: bytes) -> tuple[KernelImage, ...]:
    """The entries of an NVIDIA fatbin (as nvcc --fatbin writes it; empty if ``code`` is not
    one). Layout: header {u32 magic, u16 version, u16 header size, u64 body size}, then
    entries {u16 kind, u16, u32 header size, u64 payload size, ..., u32 arch at +28,
    u64 flags at +40 (0x2000/0x8000: compressed)}."""
    import struct

    if len(code) < 16 or struct.unpack_from("<I", code, 0)[0] != _FATBIN_MAGIC:
        return ()
    _, _, header, size = struct.unpack_from("<IHHQ", code, 0)
    images, off, end = [], header, min(len(code), header + size)
    while off + 48 <= end:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", code, off)
        arch = struct.unpack_from("<I", code, off + 28)[0]
        flags = struct.unpack_from("<Q", code, off + 40)[0]
        images.append(KernelImage(_FATBIN_KINDS.get(kind, f"kind{kind}"), f"sm_{arch}", bool(flags & 0xA000)))
        off += entry_header + payload
    return tuple(images)


def read_cuda_modules(path) -> list[CudaModuleInfo]:
    """The CUDA device modules serialized in artifact ``path``, read from the file (no GPU or
    CUDA runtime needed). TVM's format: kind string "cuda", u64 size, then [fmt][fmap][code]
    with strings and arrays as u64 count + items, each FunctionInfo as name, arg types
    (4 bytes each), launch parameter tags (strings), arg extra tags (4 bytes each)."""
    import struct
    from pathlib import Path

    data = Path(path).read_bytes()
    marker = struct.pack("<Q", 4) + b"cuda"
    found, start = [], 0
    while (at := data.find(marker, start)) >= 0:
        start = at + len(marker)
        try:
            found.append(_parse_cuda_module(data, start + 8))
        except (struct.error, UnicodeDecodeError, ValueError):
            continue  # the bytes "cuda" appeared elsewhere
    return found


def _parse_cuda_module(data: bytes, off: int) -> CudaModuleInfo:
    import struct

    def u64():
        nonlocal off
        value = struct.unpack_from("<Q", data, off)[0]
        off += 8
        return value

    def skip(item_size):
        nonlocal off
        count = u64()
        off += item_size * count

    def string(limit=4096):
        nonlocal off
        n = u64()
        if n > limit or off + n > len(data):
            raise ValueError("not a string")
        text = data[off:off + n].decode("utf-8")
        off += n
        return text

    fmt = string(16)
    if fmt not in ("cubin", "ptx", "fatbin", "cuda"):
        raise ValueError(f"unknown CUDA module format {fmt!r}")
    kernels = {}
    for _ in range(u64()):
        name = string()
        string()  # FunctionInfo.name
        skip(4)  # arg types (DLDataType)
        tags = tuple(string(64) for _ in range(u64()))
        skip(4)  # arg extra tags
        kernels[name] = tags
    size = u64()
    return CudaModuleInfo(fmt, kernels, fatbin_images(data[off:off + size]))
