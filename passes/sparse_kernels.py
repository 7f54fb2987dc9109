"""Block-sparse (BSR) kernels in TIR and the numpy conversion that feeds them.

``y = x @ W`` with ``W`` (K x N) constant is computed from ``W^T`` (N x K) stored as BSR with
blocks of ``bs_r`` output channels x ``bs_c`` input channels:

    data    (nnzb, bs_r, bs_c)   the nonzero blocks, row-block by row-block
    indices (nnzb,)              block-column of each block
    indptr  (ceil(N / bs_r) + 1,) blocks of row-block rb are data[indptr[rb]:indptr[rb + 1]]

A 1x1 conv2d (NCHW, weight O x I) is the same product per image with ``x`` laid out
channels-first: ``y[b, o, p] = sum_i W[o, i] x[b, i, p]`` over the pixels ``p``.

The ``mvec`` kernels first copy ``x`` into a channels-first scratch ``xt[b, k, m]`` whose
pixel (row) axis is zero-padded to a multiple of the register tile, so their hot loop
neither clamps nor guards its vector loads; ``nvec`` reads x in place (scalar broadcasts,
row index clamped to ``m - 1`` in the last tile), so it runs as one parallel region: each
region costs a thread barrier, and on a loaded machine a barrier waits for a descheduled
worker. Only the write-back guards the ragged edges (``m`` not a multiple of the tile,
``n`` not a multiple of ``bs_r``). Padding blocks made by ``to_bsr`` are zeros and their
input columns are clamped to ``k - 1``, never read out of bounds.

Two register tiles (the schedule, chosen by :func:`bsr_plan` from the target's vector width):

- ``nvec`` (``bs_r`` a multiple of the vector width): accumulators ``rows x bs_r`` with the
  block's output channels in vector lanes; per stored block one vector load of the block and
  ``rows`` broadcasts of x. Parallel over row-blocks.
- ``mvec`` (narrow blocks, 1x1 / 4x1, and every conv): accumulators ``bs_r x mt`` with the
  rows (pixels) in vector lanes; per stored block ``mt / lanes`` vector loads of x and
  ``bs_r * bs_c`` broadcasts of block values. Parallel over row-blocks (a matmul: over
  groups of ~16 output channels, stored through a channels-first slab).

Both keep the whole tile in registers across the data-dependent block loop: this needs
``tirx.noalias`` (without it the accumulators live in memory, measured 5-10x slower).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def to_bsr(weight_t: np.ndarray, block: tuple[int, int]):
    """``weight_t`` (N x K) as BSR ``(data, indices, indptr)``; never zero blocks (an all-zero
    matrix keeps one zero block so every buffer has a size)."""
    bs_r, bs_c = block
    n, k = weight_t.shape
    nb, kb = -(-n // bs_r), -(-k // bs_c)
    padded = np.zeros((nb * bs_r, kb * bs_c), weight_t.dtype)
    padded[:n, :k] = weight_t
    blocks = padded.reshape(nb, bs_r, kb, bs_c).transpose(0, 2, 1, 3)  # (nb, kb, bs_r, bs_c)
    keep = np.abs(blocks).reshape(nb, kb, -1).max(axis=2) != 0
    if not keep.any():
        keep[0, 0] = True
    rows, cols = np.nonzero(keep)  # row-major: grouped by row-block
    data = np.ascontiguousarray(blocks[rows, cols])
    indptr = np.zeros(nb + 1, "int32")
    np.cumsum(np.bincount(rows, minlength=nb), out=indptr[1:])
    return data, cols.astype("int32"), indptr


def choose_block(weight_t: np.ndarray, candidates=((16, 1), (4, 1), (1, 1)), max_fill: float = 1.25):
    """The largest block whose BSR stores at most ``max_fill`` x the true nonzeros."""
    nnz = max(int(np.count_nonzero(weight_t)), 1)
    for block in candidates:
        data, _, _ = to_bsr(weight_t, block)
        if data.size <= max_fill * nnz:
            return block
    return (1, 1)


@dataclasses.dataclass(frozen=True)
class BsrSpec:
    """One BSR product. ``layout``: ``"matmul"`` (x (m, k) -> y (m, n), batch 1) or
    ``"nchw"`` (x (batch, k, m) -> y (batch, n, m), a 1x1 conv over m pixels)."""

    batch: int
    m: int
    k: int
    n: int
    bs_r: int
    bs_c: int
    nnzb: int
    dtype: str = "float32"
    layout: str = "matmul"

    def to_attr(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_attr(attr) -> "BsrSpec":
        fields = {f.name: f.type for f in dataclasses.fields(BsrSpec)}
        return BsrSpec(**{k: (str(attr[k]) if fields[k] == "str" else int(attr[k])) for k in fields})


@dataclasses.dataclass(frozen=True)
class BsrPlan:
    """The register tile: ``tile`` = ``"nvec"`` or ``"mvec"``; ``rows`` = rows (pixels) of x
    per tile (a multiple of ``lanes`` for mvec). ``order`` (nvec only): ``"rb"`` parallel over
    row-blocks, each walking all row tiles; ``"tile"``: one parallel loop over (row tile,
    row-block) pairs, tile-major (finer tasks; a tile of x stays in cache across row-blocks)."""

    tile: str
    rows: int
    lanes: int
    order: str = "rb"


def bsr_plan(spec: BsrSpec, lanes: int = 8, vector_regs: int = 16) -> BsrPlan:
    """Default tile for ``lanes``-wide vectors and ``vector_regs`` registers.

    Up to ``vector_regs - 4`` accumulators (4 registers stay free for the loaded block / x
    vector and broadcasts; 32 of 32 zmm spilled). The tile minimises ``tiles x (tile +
    TILE_OVERHEAD)``: padded rows cost work, and each tile pays the per-block index load and
    block load again (measured on AVX-512, 16x1 blocks, 128x768x3072: 28 rows, 5 tiles, beat
    16 rows, 8 tiles, although 28 pads to 140 rows)."""
    budget = max(1, vector_regs - 4)
    if spec.layout == "matmul" and spec.bs_r % lanes == 0:
        limit = max(1, budget // (spec.bs_r // lanes))
        return BsrPlan("nvec", _best_tile(spec.m, limit), lanes)
    limit = max(1, budget // spec.bs_r)
    return BsrPlan("mvec", _best_tile(-(-spec.m // lanes), limit) * lanes, lanes)


TILE_OVERHEAD = 4


def _best_tile(extent: int, limit: int) -> int:
    if extent <= limit:
        return extent
    return min(range(1, limit + 1), key=lambda t: (-(-extent // t) * (t + TILE_OVERHEAD), -t))


def bsr_primfunc(spec: BsrSpec, plan: BsrPlan | None = None):
    """PrimFunc ``(x, data, indices, indptr, y)`` computing ``spec`` with ``plan``'s tile."""
    plan = plan or bsr_plan(spec)
    if plan.tile == "nvec":
        return _nvec(spec, plan.rows, plan.order)
    return _mvec(spec, plan.rows, plan.lanes)


def _stage_shapes(spec: BsrSpec, rows: int):
    mpad = -(-spec.m // rows) * rows
    x_shape = (spec.m, spec.k) if spec.layout == "matmul" else (spec.batch, spec.k, spec.m)
    y_shape = (spec.m, spec.n) if spec.layout == "matmul" else (spec.batch, spec.n, spec.m)
    return mpad, x_shape, y_shape


def _nvec(spec: BsrSpec, rows: int, order: str = "rb"):
    """Output channels in vector lanes (matmul layout only)."""
    from tvm.script import tirx as T

    m, k, n, bs_r, bs_c, nnzb, dtype = spec.m, spec.k, spec.n, spec.bs_r, spec.bs_c, spec.nnzb, spec.dtype
    nb = -(-n // bs_r)
    mpad, x_shape, y_shape = _stage_shapes(spec, rows)
    n_tiles = mpad // rows
    # order "rb": t = row-block, u = row tile; "tile": t = (row tile, row-block) tile-major,
    # u = 0. One parallel region either way; for "rb" t % nb == t and t // nb == 0.
    par, ser = (n_tiles * nb, 1) if order == "tile" else (nb, n_tiles)

    @T.prim_func(private=True)
    def bsr_matmul(
        x: T.Buffer(x_shape, dtype),
        data: T.Buffer((nnzb, bs_r, bs_c), dtype),
        indices: T.Buffer((nnzb,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        y: T.Buffer(y_shape, dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        for t in T.parallel(par):
            for u in T.serial(ser):
                rb = T.meta_var(t % nb)
                mo = T.meta_var(t // nb + u)
                acc = T.alloc_buffer((rows, bs_r), dtype, scope="local")
                for ii in T.unroll(rows):
                    for r in T.vectorized(bs_r):
                        acc[ii, r] = T.Cast(dtype, 0)
                for j in T.serial(indptr[rb], indptr[rb + 1]):
                    for c in T.unroll(bs_c):
                        for ii in T.unroll(rows):
                            for r in T.vectorized(bs_r):
                                acc[ii, r] = acc[ii, r] + data[j, r, c] * x[T.min(mo * rows + ii, m - 1), T.min(indices[j] * bs_c + c, k - 1)]
                for ii in T.unroll(rows):
                    for r in T.vectorized(bs_r):
                        if mo * rows + ii < m and rb * bs_r + r < n:
                            y[mo * rows + ii, rb * bs_r + r] = acc[ii, r]

    return bsr_matmul


def _mvec(spec: BsrSpec, rows: int, lanes: int):
    """Rows (pixels) in vector lanes; ``rows`` a multiple of ``lanes``."""
    from tvm.script import tirx as T

    batch, m, k, n, bs_r, bs_c, nnzb, dtype = (
        spec.batch, spec.m, spec.k, spec.n, spec.bs_r, spec.bs_c, spec.nnzb, spec.dtype)
    nb = -(-n // bs_r)
    mpad, x_shape, y_shape = _stage_shapes(spec, rows)
    n_tiles = mpad // rows

    if spec.layout == "matmul":
        # Tasks of ``group`` row-blocks (~16 output channels): the task's tiles go to a slab
        # (channels x rows) and the slab is written to y row by row, ``group * bs_r``
        # contiguous outputs per row: storing each tile straight into y would scatter one
        # scalar per row of y (a new cache line, often a new page, every store).
        group = max(1, 16 // bs_r)
        gh = group * bs_r
        n_groups = -(-nb // group)

        @T.prim_func(private=True)
        def bsr_matmul(
            x: T.Buffer(x_shape, dtype),
            data: T.Buffer((nnzb, bs_r, bs_c), dtype),
            indices: T.Buffer((nnzb,), "int32"),
            indptr: T.Buffer((nb + 1,), "int32"),
            y: T.Buffer(y_shape, dtype),
        ):
            T.func_attr({"tirx.noalias": True})
            xt = T.alloc_buffer((k, mpad), dtype)
            for kk in T.parallel(k):
                for i in T.serial(mpad):
                    xt[kk, i] = T.if_then_else(i < m, x[T.min(i, m - 1), kk], T.Cast(dtype, 0))
            for g in T.parallel(n_groups):
                slab = T.alloc_buffer((gh, mpad), dtype)
                for gr in T.serial(group):
                    for mo in T.serial(n_tiles):
                        acc = T.alloc_buffer((bs_r, rows), dtype, scope="local")
                        for r in T.unroll(bs_r):
                            for mi in T.vectorized(rows):
                                acc[r, mi] = T.Cast(dtype, 0)
                        for j in T.serial(indptr[T.min(g * group + gr, nb)], indptr[T.min(g * group + gr + 1, nb)]):
                            for c in T.unroll(bs_c):
                                for r in T.unroll(bs_r):
                                    for mi in T.vectorized(rows):
                                        acc[r, mi] = acc[r, mi] + data[j, r, c] * xt[T.min(indices[j] * bs_c + c, k - 1), mo * rows + mi]
                        for r in T.unroll(bs_r):
                            for mi in T.vectorized(rows):
                                slab[gr * bs_r + r, mo * rows + mi] = acc[r, mi]
                for i in T.serial(m):
                    for q in T.serial(gh):
                        if g * gh + q < n:
                            y[i, g * gh + q] = slab[q, i]

        return bsr_matmul

    @T.prim_func(private=True)
    def bsr_conv1x1(
        x: T.Buffer(x_shape, dtype),
        data: T.Buffer((nnzb, bs_r, bs_c), dtype),
        indices: T.Buffer((nnzb,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        y: T.Buffer(y_shape, dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        xt = T.alloc_buffer((batch, k, mpad), dtype)
        for bk in T.parallel(batch * k):
            for i in T.serial(mpad):
                xt[bk // k, bk % k, i] = T.if_then_else(i < m, x[bk // k, bk % k, T.min(i, m - 1)], T.Cast(dtype, 0))
        for brb in T.parallel(batch * nb):
            for mo in T.serial(n_tiles):
                acc = T.alloc_buffer((bs_r, rows), dtype, scope="local")
                for r in T.unroll(bs_r):
                    for mi in T.vectorized(rows):
                        acc[r, mi] = T.Cast(dtype, 0)
                for j in T.serial(indptr[brb % nb], indptr[brb % nb + 1]):
                    for c in T.unroll(bs_c):
                        for r in T.unroll(bs_r):
                            for mi in T.vectorized(rows):
                                acc[r, mi] = acc[r, mi] + data[j, r, c] * xt[brb // nb, T.min(indices[j] * bs_c + c, k - 1), mo * rows + mi]
                for r in T.unroll(bs_r):
                    for mi in T.vectorized(rows):
                        if mo * rows + mi < m and (brb % nb) * bs_r + r < n:
                            y[brb // nb, (brb % nb) * bs_r + r, mo * rows + mi] = acc[r, mi]

    return bsr_conv1x1


def reference_bsr(spec: BsrSpec, x: np.ndarray, data, indices, indptr) -> np.ndarray:
    """numpy evaluation of ``spec`` from its BSR arrays (for tests)."""
    nb = len(indptr) - 1
    wt = np.zeros((nb * spec.bs_r, -(-spec.k // spec.bs_c) * spec.bs_c), data.dtype)
    for rb in range(nb):
        for j in range(indptr[rb], indptr[rb + 1]):
            c0 = indices[j] * spec.bs_c
            wt[rb * spec.bs_r:(rb + 1) * spec.bs_r, c0:c0 + spec.bs_c] = data[j]
    wt = wt[: spec.n, : spec.k]
    if spec.layout == "matmul":
        return x @ wt.T
    return np.einsum("ok,bkm->bom", wt, x)


# ------------------------------------------------------------------- the tunable workload
# What SparseRewrite emits, and what ``accelc tune`` extracts as a task: the BSR product as
# one opaque block ``bsr`` tagged ``schedule_rule = BSR_RULE`` whose loops all have static
# extents (MetaSchedule's ``DisallowDynamicLoop`` rejects the data-dependent block loop: the
# row-block loop runs ``max_row`` times, the most blocks any row-block holds, and skips past
# ``indptr[rb + 1]``). The target's rule re-emits it as a register-tiled kernel
# (``bsr_primfunc``); the search space (``targets/llvm_cpu/sparse.py``) samples the tile and
# records it as the block annotation ``PLAN_ANNOTATION`` that ``realize_bsr`` turns into
# the kernel, when a trial is built and when a record is applied at compile.
BSR_RULE = "accelc.llvm_cpu.bsr"
PLAN_ANNOTATION = "accelc.bsr_plan"  # encode_plan(plan): tile kind and rows of x per tile
LANES_ANNOTATION = "accelc.bsr_lanes"
PATTERN_ATTR = "accelc.bsr_pattern"  # hash of (indices, indptr): part of the workload identity
_MVEC, _TILE_MAJOR = 1000, 2000


def pattern_key(indices: np.ndarray, indptr: np.ndarray) -> str:
    """Stable hash of the sparsity structure: tuning records of one pattern never apply to
    another pattern of the same shape and block count (the kernel's work differs)."""
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(indices, "int32").tobytes())
    h.update(b"|" + np.ascontiguousarray(indptr, "int32").tobytes())
    return h.hexdigest()[:16]


def encode_plan(plan: BsrPlan) -> int:
    """One integer per plan (a ``sample_categorical`` candidate): rows, +1000 for mvec,
    +2000 for nvec in tile-major order."""
    if plan.tile == "mvec":
        return plan.rows + _MVEC
    return plan.rows + (_TILE_MAJOR if plan.order == "tile" else 0)


def decode_plan(code: int, lanes: int) -> BsrPlan:
    if code >= _TILE_MAJOR:
        return BsrPlan("nvec", code - _TILE_MAJOR, lanes, "tile")
    return BsrPlan("mvec", code - _MVEC, lanes) if code >= _MVEC else BsrPlan("nvec", code, lanes)


def plan_candidates(spec: BsrSpec, lanes: int = 8, vector_regs: int = 16) -> list[BsrPlan]:
    """The tuning space: every register tile that fits ``vector_regs - 4`` accumulators,
    ``nvec`` (block rows in lanes, 1..limit rows, either outer order) when ``bs_r`` is a multiple of ``lanes``
    and ``mvec`` (rows in lanes, ``lanes``-multiples); the default ``bsr_plan`` first."""
    default = bsr_plan(spec, lanes, vector_regs)
    budget = max(1, vector_regs - 4)
    plans = [default]
    if spec.layout == "matmul" and spec.bs_r % lanes == 0:
        limit = max(1, budget // (spec.bs_r // lanes))
        for order in ("rb", "tile"):
            plans += [BsrPlan("nvec", r, lanes, order) for r in range(1, min(limit, spec.m) + 1)]
    limit = max(1, budget // spec.bs_r)
    m_vecs = -(-spec.m // lanes)
    plans += [BsrPlan("mvec", t * lanes, lanes) for t in range(1, min(limit, m_vecs) + 1)]
    return list(dict.fromkeys(plans))


def bsr_workload(spec: BsrSpec, max_row: int):
    """The unscheduled kernel ``(x, data, indices, indptr, y)``: one tagged block, static
    loops (see above). Correct on its own, but slow: the target's rule replaces its body."""
    from tvm.script import tirx as T

    batch, m, k, n, bs_r, bs_c, nnzb, dtype = (
        spec.batch, spec.m, spec.k, spec.n, spec.bs_r, spec.bs_c, spec.nnzb, spec.dtype)
    nb = -(-n // bs_r)
    max_row = max(1, int(max_row))
    _, x_shape, y_shape = _stage_shapes(spec, 1)
    nchw = spec.layout == "nchw"

    @T.prim_func(private=True, s_tir=True)
    def bsr_kernel(
        x: T.Buffer(x_shape, dtype),
        data: T.Buffer((nnzb, bs_r, bs_c), dtype),
        indices: T.Buffer((nnzb,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        y: T.Buffer(y_shape, dtype),
    ):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            with T.sblock("bsr"):
                T.sblock_attr({"schedule_rule": BSR_RULE})
                for b, rb, jj, i, r, c in T.grid(batch, nb, max_row, m, bs_r, bs_c):
                    if rb * bs_r + r < n:
                        if jj == 0 and c == 0:
                            if nchw:
                                y[b, rb * bs_r + r, i] = T.Cast(dtype, 0)
                            else:
                                y[i, rb * bs_r + r] = T.Cast(dtype, 0)
                        if indptr[rb] + jj < indptr[rb + 1]:
                            if nchw:
                                y[b, rb * bs_r + r, i] = y[b, rb * bs_r + r, i] + data[indptr[rb] + jj, r, c] * x[
                                    b, T.min(indices[indptr[rb] + jj] * bs_c + c, k - 1), i]
                            else:
                                y[i, rb * bs_r + r] = y[i, rb * bs_r + r] + data[indptr[rb] + jj, r, c] * x[
                                    i, T.min(indices[indptr[rb] + jj] * bs_c + c, k - 1)]

    return bsr_kernel


def realize_bsr(func):
    """The register-tiled kernel of a tuned BSR workload (``PLAN_ANNOTATION`` on its block),
    keeping the function's attributes; None when ``func`` is not one."""
    from tvm import s_tir
    import tvm

    if func.attrs is None or "accelc.bsr" not in func.attrs:
        return None
    try:
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        ann = sch.get(sch.get_sblock("bsr")).annotations
    except Exception:  # noqa: BLE001  (already realized: no such block)
        return None
    if PLAN_ANNOTATION not in ann:
        return None
    lanes = int(ann[LANES_ANNOTATION]) if LANES_ANNOTATION in ann else 8
    spec = BsrSpec.from_attr(func.attrs["accelc.bsr"])
    plan = decode_plan(int(ann[PLAN_ANNOTATION]), lanes)
    tiled = bsr_primfunc(spec, plan)
    for key, value in func.attrs.items():
        tiled = tiled.with_attr(key, value)
    return tiled.with_attr("accelc.bsr_tile", f"{plan.tile}:{plan.rows}")


def realize_bsr_module(mod):
    """``realize_bsr`` on every function of ``mod`` that is a tuned BSR workload."""
    from tvm import tirx

    for gvar, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc):
            tiled = realize_bsr(func)
            if tiled is not None:
                mod[gvar] = tiled
    return mod
