"""Helpers shared by the CPU schedule rules."""

from __future__ import annotations

import dataclasses

from tvm import relax, s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .config import CpuScheduleConfig, config_from_target



def static_shape(expr) -> list[int] | None:
    """A Relax expression's shape as ints, or None when it is not a tensor of static shape."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return [int(d) for d in ty.shape]
    except (TypeError, ValueError):
        return None


class CpuRule(ScheduleRule):
    """A dlight rule for one kind of accelc CPU kernel. Its knobs come from the target
    (``config_for``) unless a ``CpuScheduleConfig`` is given (tests and benchmarks pin them)."""

    def __init__(self, config: CpuScheduleConfig | None = None):
        self.config = config

    def config_for(self, target: Target) -> CpuScheduleConfig:
        config = self.config or config_from_target(target)
        cores = int(target.attrs.get("num-cores", 0) or 0) if target is not None else 0
        if cores == 1 and config.num_cores != 1:  # a kernel ApplyCpuSchedules runs serially
            config = dataclasses.replace(config, num_cores=1)
        return config


def find_rule_block(sch: s_tir.Schedule, rule: str):
    """The block annotated ``schedule_rule == rule``, or None (also None if there are several)."""
    found = []
    for block in sch.get_child_blocks(sch.get_sblock("root") if _has_root(sch) else None):
        ann = sch.get(block).annotations
        if "schedule_rule" in ann and str(ann["schedule_rule"]) == rule:
            found.append(block)
    return found[0] if len(found) == 1 else None


def _has_root(sch: s_tir.Schedule) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # pylint: disable=broad-except
        return False


def all_blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def loop_extent(sch: s_tir.Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def inline_epilogue(sch: s_tir.Schedule, main) -> list:
    """Inline the injective blocks that follow ``main`` into each other; return the blocks
    that remain after ``main`` (normally one: the block writing the function output)."""
    blocks = all_blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    main_name = sch.get(main).name_hint
    after = names[names.index(main_name) + 1:]
    remaining = []
    for i, name in enumerate(after):
        block = sch.get_sblock(name)
        if i == len(after) - 1:
            remaining.append(block)
            break
        try:
            sch.compute_inline(block)
        except Exception:  # pylint: disable=broad-except
            remaining.append(block)
    return remaining


def producers_before(sch: s_tir.Schedule, main) -> list:
    blocks = all_blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    return [sch.get_sblock(n) for n in names[: names.index(sch.get(main).name_hint)]]


def _write_contiguous_innermost(sch: s_tir.Schedule, block) -> None:
    """Make the innermost loop the one the block's output is contiguous along.

    A layout transform NCHW -> NCHW16c iterates the input (c, h, w): vectorized over w, its
    stores went 16 floats apart (a scatter; ShuffleNet's 1.4 MB transform took 0.6 ms). When
    the output's last index is ``v % b`` (or ``v``) of a block iter bound to a loop that is
    not innermost, that loop is split by ``b`` and its inner part moved innermost: loads
    become strided instead, and strided loads are cheaper than scattered stores."""
    stmt = sch.get(block)
    if len(stmt.writes) != 1 or not stmt.writes[0].region:
        return
    last = stmt.writes[0].region[-1].min
    block_b = None
    if isinstance(last, tirx.FloorMod) and isinstance(last.b, tirx.IntImm):
        var, block_b = last.a, int(last.b)
    elif isinstance(last, tirx.Var):
        var = last
    else:
        return
    if not isinstance(var, tirx.Var):
        return
    loops = sch.get_loops(block)
    realize = sch.get(loops[-1]).body if loops else None
    if not isinstance(realize, s_tir.SBlockRealize):
        return
    loop_vars = [sch.get(l).loop_var for l in loops]
    target = None
    for iv, value in zip(stmt.iter_vars, realize.iter_values):
        if iv.var.same_as(var) and isinstance(value, tirx.Var):
            target = next((i for i, lv in enumerate(loop_vars) if lv.same_as(value)), None)
    if target is None or target == len(loops) - 1:
        return
    ext = loop_extent(sch, loops[target])
    if ext is None:
        return
    inner = loops[target]
    if block_b is not None:
        if ext % block_b or ext == block_b:
            return
        _, inner = sch.split(loops[target], [None, block_b])
    loops = sch.get_loops(block)
    sch.reorder(*[l for l in loops if not sch.get(l).same_as(sch.get(inner))], inner)


def schedule_injective(sch: s_tir.Schedule, block, config: CpuScheduleConfig) -> None:
    """Parallel outer loops + vectorized innermost loop for a spatial block at root."""
    loops = sch.get_loops(block)
    if not loops:
        return
    if sch.get(block).name_hint.startswith("te_layout_transform"):
        _write_contiguous_innermost(sch, block)
        loops = sch.get_loops(block)
    extents = [loop_extent(sch, l) for l in loops]
    if any(e is None for e in extents):
        return
    inner = loops[-1]
    if len(loops) > 1:
        outer = sch.fuse(*loops[:-1])
        if _prod(extents[:-1]) > 1 and config.num_cores > 1:
            sch.parallel(outer)
    elif extents[0] >= 4 * config.vector_lanes and config.num_cores > 1:
        outer, inner = sch.split(inner, [None, config.vector_lanes * 4])
        sch.parallel(outer)
        extents = [config.vector_lanes * 4]
    if extents[-1] <= 64:
        sch.vectorize(inner)
    elif extents[-1] % config.vector_lanes == 0:
        _, vec = sch.split(inner, [None, config.vector_lanes])
        sch.vectorize(vec)


def _prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


def place_epilogue(
    sch: s_tir.Schedule, main, tile_loop, config: CpuScheduleConfig, fuse: bool = True, replayable: bool = False
):
    """Keep ``main``'s output tile in registers and compute the epilogue inside the tile.

    If ``main`` writes the function output itself, a local cache is inserted; otherwise the
    single remaining epilogue block is moved under ``tile_loop``. When the epilogue reads the
    tile through a non-identity map (e.g. a layout_transform back to NCHW) the tile is written
    once from registers and the epilogue runs as its own loop nest.
    ``fuse=False`` skips the in-tile epilogue: needed when the tile is no box of the epilogue's
    iteration space (a tile of flattened pixels that ends mid-row), where region inference
    would over-approximate and the epilogue would read values the tile never computed.
    ``replayable=True`` (MetaSchedule search spaces) makes every loop count independent of the
    tile knobs: unit loops stay, and the tile's loops are vectorized/unrolled whatever their
    extents (a replayed trace must make the same loops at every step).
    Returns ``(schedule, fused)``; the schedule may be a copy (block/loop RVs stay valid).
    """
    epilogue = inline_epilogue(sch, main)
    if not epilogue:
        final = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(final, tile_loop, preserve_unit_loops=replayable)
        _vectorize_tile(sch, final, tile_loop, config, replayable)
        _tile_on_stack(sch, main)
        return sch, True
    for block in epilogue[:-1]:
        schedule_injective(sch, block, config)
    final = epilogue[-1]
    if fuse:
        trial = sch.copy()
        try:
            trial.set_scope(main, 0, "local")
            trial.reverse_compute_at(final, tile_loop, preserve_unit_loops=replayable)
            _vectorize_tile(trial, final, tile_loop, config, replayable)
            _tile_on_stack(trial, main)
            return trial, True
        except Exception:  # pylint: disable=broad-except
            pass
    cache = sch.cache_write(main, 0, "local")
    sch.reverse_compute_at(cache, tile_loop, preserve_unit_loops=replayable)
    _vectorize_tile(sch, cache, tile_loop, config, replayable)
    _tile_on_stack(sch, main)
    schedule_injective(sch, final, config)
    return sch, False


def _tile_on_stack(sch, main) -> None:
    """Give the register tile's buffer global scope. TVM's LowerTVMBuiltin serves every
    "local" CPU allocation with a TVMBackendAllocWorkspace/FreeWorkspace call pair (once per
    tile, inside the parallel loop) but puts small *global* ones (< 1 KiB) on the stack, where
    LLVM keeps them in registers (found in the int8 kernels; fp32 layers measured 0.98-1.19x,
    a 1x1 256->64 conv 1.19x, a 128x768x3072 matmul 1.06x)."""
    sch.set_scope(main, 0, "global")


def _vectorize_tile(sch, block, tile_loop, config, replayable: bool = False):
    loops = sch.get_loops(block)
    tile_stmt = sch.get(tile_loop)
    idx = [i for i, l in enumerate(loops) if sch.get(l).same_as(tile_stmt)]
    inner = loops[idx[0] + 1:] if idx else loops[-2:]
    if not inner:
        return
    ext = loop_extent(sch, inner[-1])
    if replayable or (ext is not None and ext <= 64):
        sch.vectorize(inner[-1])
    for loop in inner[:-1]:
        e = loop_extent(sch, loop)
        if replayable or (e is not None and e <= 32):
            sch.unroll(loop)
