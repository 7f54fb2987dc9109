"""Tile planner: how one int8 layer is cut into tiles that fit VTA's buffers and fields.

A layer is first normalized into a :class:`Problem` counted in VTA blocks (channels padded to
BLOCK_IN/BLOCK_OUT, batch to BATCH). Dense is the 1x1 convolution whose "width" runs over
batch blocks (``x (N, IC)`` becomes ``(IC/BI, 1, N/B)`` with the BATCH rows in the lanes), so
there is a single lowering. A :class:`TilePlan` tiles output channels, input channels (the
reduction, ``K = ceil(IC_blocks / ic_tile)`` steps per output tile), output rows and output
columns, and chooses the loop order and the number of virtual threads (SRAM halves).

:func:`check_plan` is the one place that knows every limit: buffer depths (each virtual thread
owns ``1/virtual_threads`` of inp/wgt/acc; the layer's per-channel constants take ``2*OC``
accumulator rows), the micro-op buffer, and every instruction field the lowering will fill
(loop extents and factors, LOAD/STORE sizes, strides, pads, DRAM addresses). The lowering
also validates each instruction as it is emitted; the tests sweep random shapes to show the
two agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

from .config import (DRAM_ADDR_BITS, LOOP_ITER_BITS, MEMOP_PAD_BITS, MEMOP_SIZE_BITS,
                     MEMOP_STRIDE_BITS, VTAConfig, VTAError)

ORDERS = ("oc_outer", "spatial_outer")


class TilingError(VTAError):
    """A layer, or a tile plan, that cannot run on the configured VTA (the message says which
    limit it exceeds)."""


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Problem:
    """A layer in VTA units: channel blocks, batch blocks, pixels.

    ``n_blocks`` batch blocks are iterated as separate tiles (BATCH images share an element);
    dense layers have ``n_blocks == 1`` and put their batch blocks along ``w``.
    """

    n_blocks: int
    ic_blocks: int
    oc_blocks: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    pad: tuple[int, int, int, int]  # top, left, bottom, right

    @classmethod
    def from_spec(cls, spec: Any, cfg: VTAConfig) -> Problem:
        icb, ocb = _cdiv(spec.in_channels, cfg.block_in), _cdiv(spec.out_channels, cfg.block_out)
        nb = _cdiv(spec.batch, cfg.batch)
        if spec.kind == "dense":
            return cls(1, icb, ocb, 1, nb, 1, 1, 1, 1, (0, 0, 0, 0))
        return cls(nb, icb, ocb, spec.height, spec.width, *spec.kernel, *spec.stride, tuple(spec.padding))

    @property
    def oh(self) -> int:
        return (self.h + self.pad[0] + self.pad[2] - self.kh) // self.sh + 1

    @property
    def ow(self) -> int:
        return (self.w + self.pad[1] + self.pad[3] - self.kw) // self.sw + 1

    @property
    def kk(self) -> int:
        return self.kh * self.kw

    @property
    def row_skip(self) -> bool:
        """A strided 1x1 conv without vertical padding loads only the rows it reads: the LOAD's
        DRAM row stride becomes ``sh * W`` (columns are contiguous and cannot be skipped)."""
        return self.kh == 1 and self.sh > 1 and self.pad[0] == 0 and self.pad[2] == 0

    def tile_rows(self, oh_n: int) -> int:
        """Input rows held in SRAM for ``oh_n`` output rows (padding included)."""
        return oh_n if self.row_skip else (oh_n - 1) * self.sh + self.kh

    def tile_cols(self, ow_n: int) -> int:
        return (ow_n - 1) * self.sw + self.kw

    @property
    def gemm_ops(self) -> int:
        """GEMM micro-op iterations of the whole layer (each a BATCH x BLOCK_IN x BLOCK_OUT MAC)."""
        return self.n_blocks * self.oc_blocks * self.oh * self.ow * self.ic_blocks * self.kk

    def split(self, extent: int, tile: int) -> list[tuple[int, int]]:
        return [(s, min(tile, extent - s)) for s in range(0, extent, tile)]


@dataclass(frozen=True)
class TilePlan:
    """Tile sizes (``oc_tile``/``ic_tile`` in channel blocks, ``oh_tile``/``ow_tile`` in output
    pixels; for dense ``ow_tile`` counts batch blocks), the order of the output-tile loops
    (``oc_outer``: weights stay while the spatial tiles stream, ``spatial_outer``: inputs stay)
    and the number of virtual threads (1 = serial, 2 = double buffering)."""

    oc_tile: int
    ic_tile: int
    oh_tile: int
    ow_tile: int
    order: str = "oc_outer"
    virtual_threads: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TilePlan:
        try:
            return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})
        except TypeError as e:
            raise TilingError(f"not a tile plan: {d!r} ({e})") from None

    def __str__(self) -> str:
        return (f"oc{self.oc_tile}/ic{self.ic_tile}/oh{self.oh_tile}/ow{self.ow_tile}/"
                f"{self.order}/vt{self.virtual_threads}")


@dataclass(frozen=True)
class Budget:
    """Elements of each buffer one virtual thread may use (acc: after the constant rows)."""

    inp: int
    wgt: int
    acc: int
    const_rows: int

    @classmethod
    def of(cls, p: Problem, cfg: VTAConfig, vt: int) -> Budget:
        const_rows = 2 * p.oc_blocks  # rounding-bias and shift rows, one per output block
        return cls(cfg.inp_depth // vt, cfg.wgt_depth // vt, (cfg.acc_depth - const_rows) // vt, const_rows)


def uop_width(p: Problem, oc_n: int, ow_n: int) -> int:
    """Output columns unrolled into the micro-op kernel. VTA's GEMM pipeline forbids a micro-op
    writing the accumulator row of either of the two previous ones (``UopKernel::VerifyDep``);
    with the output channel innermost that holds for 3+ channel blocks, otherwise the columns
    go into the kernel too."""
    return 1 if oc_n >= 3 else ow_n


def hazard_free(p: Problem, plan: TilePlan) -> bool:
    """Whether every tile's GEMM kernel writes 3+ distinct accumulator rows between two writes
    of one row (always true for a single-term reduction: each row is written once)."""
    if plan.ic_tile * p.kk == 1 and p.ic_blocks == 1:
        return True
    ocs = {n for _, n in p.split(p.oc_blocks, plan.oc_tile)}
    ows = {n for _, n in p.split(p.ow, plan.ow_tile)}
    return all(o * uop_width(p, o, w) >= 3 for o in ocs for w in ows)


def gemm_kernel_size(p: Problem, oc_n: int, ic_n: int, ow_n: int) -> int:
    return oc_n * ic_n * p.kk * uop_width(p, oc_n, ow_n)


def check_layer(p: Problem, cfg: VTAConfig) -> None:
    """Limits that no tiling can lift."""
    what = "layer"
    if max(p.pad) > (1 << MEMOP_PAD_BITS) - 1:
        raise TilingError(f"{what}: padding {p.pad} exceeds the LOAD pad field "
                          f"(max {(1 << MEMOP_PAD_BITS) - 1})")
    if p.pad[0] >= p.kh or p.pad[2] >= p.kh or p.pad[1] >= p.kw or p.pad[3] >= p.kw:
        raise TilingError(f"{what}: padding {p.pad} >= kernel {p.kh}x{p.kw} (rows of pure padding) "
                          "is not supported")
    if p.oh < 1 or p.ow < 1:
        raise TilingError(f"{what}: kernel {p.kh}x{p.kw} larger than the padded input")
    limit = (1 << MEMOP_STRIDE_BITS) - 1
    row_stride = p.w * (p.sh if p.row_skip else 1)
    for name, v in (("input row stride", row_stride), ("output row stride", p.ow),
                    ("weight row stride", p.ic_blocks * p.kk)):
        if v > limit:
            raise TilingError(f"{what}: {name} {v} exceeds the 16-bit LOAD/STORE stride field")
    b = Budget.of(p, cfg, 1)
    if b.acc < 1:
        raise TilingError(f"{what}: {p.oc_blocks} output blocks need {b.const_rows} constant rows, "
                          f"more than the accumulator holds ({cfg.acc_depth})")


def dram_bytes(p: Problem, cfg: VTAConfig) -> int:
    """Bytes of the layer's DRAM image without micro-ops (inputs, weights, constants, outputs)."""
    return (p.n_blocks * p.ic_blocks * p.h * p.w * cfg.inp_elem_bytes
              + p.oc_blocks * p.ic_blocks * p.kk * cfg.wgt_elem_bytes
              + 2 * p.oc_blocks * cfg.acc_elem_bytes
              + p.n_blocks * p.oc_blocks * p.oh * p.ow * cfg.out_elem_bytes)


def check_plan(p: Problem, plan: TilePlan, cfg: VTAConfig) -> None:
    """Raise :class:`TilingError` if ``plan`` would exceed any buffer or instruction field."""
    check_layer(p, cfg)
    err = lambda msg: TilingError(f"tile plan {plan}: {msg}")  # noqa: E731
    if plan.order not in ORDERS:
        raise err(f"unknown loop order {plan.order!r} (expected one of {ORDERS})")
    if plan.virtual_threads not in (1, 2):
        raise err("virtual_threads must be 1 or 2")
    for name, v, hi in (("oc_tile", plan.oc_tile, p.oc_blocks), ("ic_tile", plan.ic_tile, p.ic_blocks),
                        ("oh_tile", plan.oh_tile, p.oh), ("ow_tile", plan.ow_tile, p.ow)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise err(f"{name}={v!r} outside [1, {hi}]")
    b = Budget.of(p, cfg, plan.virtual_threads)
    hp, wp = p.tile_rows(plan.oh_tile), p.tile_cols(plan.ow_tile)
    acc_rows = plan.oc_tile * plan.oh_tile * plan.ow_tile
    uses = (("input", plan.ic_tile * hp * wp, b.inp),
            ("weight", plan.oc_tile * plan.ic_tile * p.kk, b.wgt),
            ("accumulator", acc_rows, b.acc))
    for name, used, avail in uses:
        if used > avail:
            raise err(f"{name} tile needs {used} elements > {avail} available per virtual thread")
    # Micro-op kernels: the largest GEMM kernel over the edge-tile shapes must fit the buffer.
    ocs = {n for _, n in p.split(p.oc_blocks, plan.oc_tile)}
    ows = {n for _, n in p.split(p.ow, plan.ow_tile)}
    kernel = max(gemm_kernel_size(p, o, plan.ic_tile, w) for o in ocs for w in ows)
    if kernel > cfg.uop_depth:
        raise err(f"GEMM micro-op kernel of {kernel} micro-ops > uop buffer depth {cfg.uop_depth}")
    max_iter = (1 << LOOP_ITER_BITS) - 1
    for name, v in (("oh_tile", plan.oh_tile), ("ow_tile", plan.ow_tile), ("oc_tile", plan.oc_tile),
                    ("tile pixels", plan.oh_tile * plan.ow_tile)):
        if v > max_iter:
            raise err(f"{name} {v} exceeds the {LOOP_ITER_BITS}-bit loop extent")
    # Loop factors are SRAM distances below each buffer's depth (the field is log2(depth) wide).
    row_factor = wp if p.row_skip else p.sh * wp
    if plan.oh_tile > 1 and row_factor >= cfg.inp_depth:
        raise err(f"input row factor {row_factor} exceeds the src factor field")
    size_limit = (1 << MEMOP_SIZE_BITS) - 1
    for name, v in (("LOAD x_size", wp), ("LOAD y_size", plan.ic_tile * hp),
                    ("weight LOAD x_size", plan.ic_tile * p.kk), ("STORE y_size", plan.oc_tile * plan.oh_tile),
                    ("constant LOAD x_size", 2 * p.oc_blocks)):
        if v > size_limit:
            raise err(f"{name} {v} exceeds the {MEMOP_SIZE_BITS}-bit size field")
    # An element index is at most the byte offset, so a 4 GiB bound is safe for every type.
    if dram_bytes(p, cfg) + 4 * cfg.uop_depth * cfg.uop_elem_bytes >= 1 << DRAM_ADDR_BITS:
        raise err("the layer's DRAM image exceeds the 32-bit DRAM address field")


# ---------------------------------------------------------------------------------------------
# The work list (shared with the lowering)


@dataclass(frozen=True)
class Tile:
    n: int
    oc0: int
    oc_n: int
    h0: int
    oh_n: int
    w0: int
    ow_n: int


@dataclass(frozen=True)
class Unit:
    """One output tile x one reduction step, with the loads it needs (None: already resident)."""

    tile: int
    step: int
    ic0: int
    ic_n: int
    inp_key: tuple | None
    wgt_key: tuple | None


def tiles_of(p: Problem, plan: TilePlan) -> list[Tile]:
    ocs = p.split(p.oc_blocks, plan.oc_tile)
    hs, ws = p.split(p.oh, plan.oh_tile), p.split(p.ow, plan.ow_tile)
    spatial = [(n, h, w) for n in range(p.n_blocks) for h in hs for w in ws]
    if plan.order == "oc_outer":
        order = [(oc, sp) for oc in ocs for sp in spatial]
    else:
        order = [(oc, sp) for sp in spatial for oc in ocs]
    return [Tile(n, oc[0], oc[1], h[0], h[1], w[0], w[1]) for oc, (n, h, w) in order]


def units_of(p: Problem, plan: TilePlan, tiles: list[Tile]) -> list[Unit]:
    """The reduction steps in program order, with loads of tiles a thread already holds dropped."""
    vt = plan.virtual_threads
    held_inp: list[tuple | None] = [None] * vt
    held_wgt: list[tuple | None] = [None] * vt
    units = []
    for t, tile in enumerate(tiles):
        for step, (ic0, ic_n) in enumerate(p.split(p.ic_blocks, plan.ic_tile)):
            half = len(units) % vt
            inp = (tile.n, tile.h0, tile.oh_n, tile.w0, tile.ow_n, ic0, ic_n)
            wgt = (tile.oc0, tile.oc_n, ic0, ic_n)
            units.append(Unit(t, step, ic0, ic_n, None if held_inp[half] == inp else inp,
                              None if held_wgt[half] == wgt else wgt))
            held_inp[half], held_wgt[half] = inp, wgt
    return units


@dataclass(frozen=True)
class InputWindow:
    """The input a tile reads, per channel block: DRAM rows ``y_first + i * y_step`` for
    ``i < y_size`` and columns ``[x_first, x_first + x_size)``, zero-padded by ``pad`` =
    (y_pad_0, y_pad_1, x_pad_0, x_pad_1) to ``tile_rows x tile_cols`` in SRAM."""

    y_first: int
    y_size: int
    y_step: int
    x_first: int
    x_size: int
    pad: tuple[int, int, int, int]


def input_window(p: Problem, tile: Tile) -> InputWindow:
    hp, wp = p.tile_rows(tile.oh_n), p.tile_cols(tile.ow_n)
    x0 = tile.w0 * p.sw - p.pad[1]
    x_pad0, x_pad1 = max(0, -x0), max(0, x0 + wp - p.w)
    if p.row_skip:
        return InputWindow(tile.h0 * p.sh, tile.oh_n, p.sh, x0 + x_pad0, wp - x_pad0 - x_pad1,
                           (0, 0, x_pad0, x_pad1))
    y0 = tile.h0 * p.sh - p.pad[0]
    y_pad0, y_pad1 = max(0, -y0), max(0, y0 + hp - p.h)
    return InputWindow(y0 + y_pad0, hp - y_pad0 - y_pad1, 1, x0 + x_pad0, wp - x_pad0 - x_pad1,
                       (y_pad0, y_pad1, x_pad0, x_pad1))


def simulate_plan(p: Problem, plan: TilePlan, cfg: VTAConfig) -> int:
    """Cycle estimate from the work list: each unit's loads, GEMM, epilogue and stores costed
    as the simulator's cycle model costs them, the three engines overlapping under the same
    token rules as the stream (fetch and micro-op loads ignored). Catches what totals miss:
    bursts of weight loads, pipeline fill and drain."""
    c, vt = cfg, plan.virtual_threads
    dma = lambda nbytes: c.DMA_LATENCY + -(-nbytes // c.bus_bytes)  # noqa: E731
    tiles = tiles_of(p, plan)
    units = units_of(p, plan, tiles)
    steps = len(units) // len(tiles)
    load_free = comp_free = store_free = 0
    comp_end: list[int] = []
    store_end: list[int] = []
    for j, u in enumerate(units):
        tile = tiles[u.tile]
        ready = 0
        if u.inp_key is not None or u.wgt_key is not None:
            cost = 0
            if u.inp_key is not None:
                win = input_window(p, tile)
                padded = p.tile_rows(tile.oh_n) * p.tile_cols(tile.ow_n) - win.y_size * win.x_size
                cost += u.ic_n * (dma(win.y_size * win.x_size * c.inp_elem_bytes) + padded)
            if u.wgt_key is not None:
                cost += dma(tile.oc_n * u.ic_n * p.kk * c.wgt_elem_bytes)
            start = max(load_free, comp_end[j - vt] if j >= vt else 0)
            load_free = ready = start + cost
        rows = tile.oc_n * tile.oh_n * tile.ow_n
        start = max(comp_free, ready)
        cost = c.GEMM_PIPELINE_DEPTH + c.GEMM_II * rows * u.ic_n * p.kk
        if u.step == 0:
            start = max(start, store_end[u.tile - vt] if u.tile >= vt else 0)
            cost += c.GEMM_PIPELINE_DEPTH + c.GEMM_II * rows
        if u.step == steps - 1:
            cost += 4 * (c.ALU_PIPELINE_DEPTH + c.ALU_II * rows)
        comp_free = start + cost
        comp_end.append(comp_free)
        if u.step == steps - 1:
            stores = 1 if (tile.oh_n, tile.ow_n) == (p.oh, p.ow) else tile.oc_n
            store_free = max(store_free, comp_free) + stores * dma(rows // stores * c.out_elem_bytes)
            store_end.append(store_free)
    return max(comp_free, store_free)


# ---------------------------------------------------------------------------------------------
# Candidate plans and the analytic cost used to rank them


_SHORTLIST = 24


def _balanced(extent: int) -> list[int]:
    """Tile sizes ``ceil(extent / k)``: every way to cut ``extent`` into equal-ish tiles."""
    return sorted({_cdiv(extent, k) for k in range(1, extent + 1)}, reverse=True)


def candidate_plans(spec: Any, cfg: VTAConfig, virtual_threads: int = 2) -> list[TilePlan]:
    """Legal plans worth measuring, best first: for each (oc, ic, ow) tile the largest legal row
    tile (a taller tile only removes per-tile overhead), in both loop orders; plans free of
    accumulator RAW hazards (see :func:`hazard_free`) before the others, then by
    :func:`estimate_cycles`, the best few re-ordered by :func:`simulate_plan`."""
    p = spec if isinstance(spec, Problem) else Problem.from_spec(spec, cfg)
    check_layer(p, cfg)
    out = []
    for plan in _maximal_plans(p, cfg, virtual_threads):
        out.append(plan)
    out.sort(key=lambda pl: (not hazard_free(p, pl), estimate_cycles(p, pl, cfg), str(pl)))
    # The closed form shortlists; the work-list model orders the shortlist.
    head = sorted(out[:_SHORTLIST], key=lambda pl: (not hazard_free(p, pl), simulate_plan(p, pl, cfg), str(pl)))
    return head + out[_SHORTLIST:]


def _maximal_plans(p: Problem, cfg: VTAConfig, vt: int) -> Iterator[TilePlan]:
    b = Budget.of(p, cfg, vt)
    for oc_t in _balanced(p.oc_blocks):
        for ic_t in _balanced(p.ic_blocks):
            if oc_t * ic_t * p.kk > b.wgt:
                continue
            for ow_t in _balanced(p.ow):
                for oh_t in _balanced(p.oh):
                    if oc_t * oh_t * ow_t > b.acc or ic_t * p.tile_rows(oh_t) * p.tile_cols(ow_t) > b.inp:
                        continue
                    plans = [TilePlan(oc_t, ic_t, oh_t, ow_t, order, vt) for order in ORDERS]
                    try:
                        check_plan(p, plans[0], cfg)
                    except TilingError:
                        continue
                    yield from plans
                    break


def estimate_cycles(p: Problem, plan: TilePlan, cfg: VTAConfig) -> float:
    """Closed-form estimate of the pipelined cycle count (ranking only; the simulator decides).

    compute = resets + GEMM + 4 ALU passes (+ per-instruction pipeline depth); load = DMA of
    inputs and weights with the reuse the loop order allows; the engines overlap, so the
    estimate is the busier engine plus the pipeline fill (first loads) and drain (last
    epilogue and store).
    """
    c = cfg
    n_oc, n_h, n_w = _cdiv(p.oc_blocks, plan.oc_tile), _cdiv(p.oh, plan.oh_tile), _cdiv(p.ow, plan.ow_tile)
    k = _cdiv(p.ic_blocks, plan.ic_tile)
    n_sp = p.n_blocks * n_h * n_w
    tiles = n_oc * n_sp
    rows = p.n_blocks * p.oc_blocks * p.oh * p.ow
    compute = (p.gemm_ops * c.GEMM_II + rows * (c.GEMM_II + 4 * c.ALU_II)
               + tiles * (k + 1) * c.GEMM_PIPELINE_DEPTH + tiles * 4 * c.ALU_PIPELINE_DEPTH)
    dma = lambda nbytes: c.DMA_LATENCY + nbytes / c.bus_bytes  # noqa: E731
    hp, wp = p.tile_rows(plan.oh_tile), p.tile_cols(plan.ow_tile)
    inp_unit = plan.ic_tile * dma(hp * wp * c.inp_elem_bytes)
    wgt_unit = dma(plan.oc_tile * plan.ic_tile * p.kk * c.wgt_elem_bytes)
    vt = plan.virtual_threads
    if k == 1 and plan.order == "oc_outer":
        inp_loads, wgt_loads = tiles, n_oc * min(vt, n_sp)
    elif k == 1:
        inp_loads, wgt_loads = n_sp * min(vt, n_oc), tiles
    else:
        inp_loads = wgt_loads = tiles * k
    load = inp_loads * inp_unit + wgt_loads * wgt_unit
    store_tile = plan.oc_tile * dma(plan.oh_tile * plan.ow_tile * c.out_elem_bytes)
    store = tiles * store_tile
    if vt == 1:
        return compute + load + store
    # Fill: the first unit loads inputs and weights before any GEMM; drain: the last tile's
    # epilogue and store run after the last GEMM.
    fill = inp_unit + wgt_unit
    drain = 4 * (c.ALU_PIPELINE_DEPTH + c.ALU_II * plan.oc_tile * plan.oh_tile * plan.ow_tile) + store_tile
    return fill + max(compute, load - fill, store) + drain


def default_plan(spec: Any, cfg: VTAConfig, virtual_threads: int = 2) -> TilePlan:
    """The plan with the best :func:`estimate_cycles` among :func:`candidate_plans`."""
    plans = candidate_plans(spec, cfg, virtual_threads)
    if not plans:
        p = spec if isinstance(spec, Problem) else Problem.from_spec(spec, cfg)
        raise TilingError(
            f"no tile plan fits: even a 1x1-pixel tile of one channel block needs "
            f"{p.kk} weight elements and {p.tile_rows(1) * p.tile_cols(1)} input elements per "
            f"virtual thread (have {Budget.of(p, cfg, virtual_threads)})")
    return plans[0]


__all__ = ["TilingError", "Problem", "TilePlan", "Budget", "ORDERS", "check_layer", "check_plan",
           "candidate_plans", "default_plan", "estimate_cycles", "simulate_plan", "input_window", "InputWindow",
    "Tile", "Unit", "tiles_of", "units_of", "uop_width", "gemm_kernel_size", "hazard_free"]
