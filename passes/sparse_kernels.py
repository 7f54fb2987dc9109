"""Block-sparse (BSR) kernels in TIR and the numpy conversion that feeds them.

``y = x @ W`` with ``W`` (K x N) constant is computed from ``W^T`` (N x K) stored as BSR with
blocks of ``bs_r`` output channels x ``bs_c`` input channels:

    data    (nnzb, bs_r, bs_c)   the nonzero blocks, row-block by row-block
    indices (nnzb,)              block-column of each block
    indptr  (ceil(N / bs_r) + 1,) blocks of row-block rb are data[indptr[rb]:indptr[rb + 1]]

Shapes need not divide by the block: ``to_bsr`` pads with zeros and the kernel guards the
ragged edge, so padding is never read from ``x`` nor written to ``y``.
"""

from __future__ import annotations

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


def bsr_matmul_primfunc(m: int, k: int, n: int, block: tuple[int, int], nnzb: int, dtype: str = "float32"):
    """PrimFunc ``y[m, n] = sum_k x[m, k] * W[k, n]`` over the BSR form of ``W^T``."""
    from tvm.script import tirx as T

    bs_r, bs_c = block
    nb = -(-n // bs_r)

    @T.prim_func(private=True)
    def bsr_matmul(
        x: T.Buffer((m, k), dtype),
        data: T.Buffer((nnzb, bs_r, bs_c), dtype),
        indices: T.Buffer((nnzb,), "int32"),
        indptr: T.Buffer((nb + 1,), "int32"),
        y: T.Buffer((m, n), dtype),
    ):
        T.func_attr({"tir.noalias": True})
        for rb in T.parallel(nb):
            for i in T.serial(m):
                for r in T.serial(bs_r):
                    if rb * bs_r + r < n:
                        y[i, rb * bs_r + r] = T.Cast(dtype, 0)
                for j in T.serial(indptr[rb + 1] - indptr[rb]):
                    for r in T.serial(bs_r):
                        for c in T.serial(bs_c):
                            if rb * bs_r + r < n and indices[indptr[rb] + j] * bs_c + c < k:
                                y[i, rb * bs_r + r] = y[i, rb * bs_r + r] + data[indptr[rb] + j, r, c] * x[i, indices[indptr[rb] + j] * bs_c + c]

    return bsr_matmul
