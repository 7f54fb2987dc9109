"""Running offloaded layers: the ``accelc.vta.run_layer`` packed function and its blobs.

An artifact compiled for ``--target vta`` is a plain Relax VM library whose offloaded layers
are ``call_dps_packed("accelc.vta.run_layer", x, blob, out)``. The function lives in this
process, not in the ``.so``: ``register()`` (called by the vta backend before a VM loads an
artifact) registers it through tvm-ffi, and it runs the layer on the C++ simulator. So only
accelc itself (``accelc run``, ``accelc.load``) can run such an artifact; the C++ runner
``accelc-run`` cannot (it fails to find the function when it loads the VM).

A blob is ``MAGIC | u32 header length | header JSON | CompiledLayer.to_bytes()``; the header
holds the layer's name, what it computes, the VTA config and a digest of the payload, which
keys the cache of decoded layers (a payload is decoded once per process, not once per call;
name and op always come from the blob's own header, since two artifacts loaded in one process
can hold the same payload under different names).

``profiling(force_serial=...)`` collects one ``LayerRun`` (name, simulator stats, wall time)
per layer call; ``force_serial`` runs every layer in program order (VTA_DEBUG_FORCE_SERIAL),
to measure what latency hiding buys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

RUN_LAYER = "accelc.vta.run_layer"
LAYER_TABLE_FUNC = "accelc_vta_layers"
MAGIC = b"ACVTAL01"
_HEAD = struct.Struct("<8sI")


def pack_layer(name: str, compiled, cfg, op: str = "") -> np.ndarray:
    """The uint8 constant that carries ``compiled`` (a ``CompiledLayer``) into the artifact."""
    payload = compiled.to_bytes()  # compile_layer's bases are Python ints, as JSON wants
    header = json.dumps({"name": name, "op": op, "config": cfg.to_dict(),
                         "digest": hashlib.sha256(payload).hexdigest()[:32]}).encode()
    return np.frombuffer(_HEAD.pack(MAGIC, len(header)) + header + payload, np.uint8)


@dataclass
class _Layer:
    name: str
    op: str
    compiled: object  # CompiledLayer
    cfg: object  # VTAConfig


@dataclass
class LayerRun:
    name: str
    op: str
    stats: object  # SimStats
    wall_s: float
    force_serial: bool


class _State(threading.local):
    def __init__(self):
        self.force_serial = False
        self.runs: list[LayerRun] | None = None


_STATE = _State()
_CACHE: dict[str, tuple] = {}  # payload digest -> (CompiledLayer, VTAConfig)
_SIMULATORS: dict = {}


def _decode(blob: np.ndarray) -> _Layer:
    raw = blob.view(np.uint8).reshape(-1)
    magic, size = _HEAD.unpack(raw[: _HEAD.size].tobytes())
    if magic != MAGIC:
        raise ValueError("accelc.vta.run_layer: not a VTA layer blob (artifact damaged or from another accelc)")
    header = json.loads(raw[_HEAD.size : _HEAD.size + size].tobytes())
    cached = _CACHE.get(header["digest"])
    if cached is None:
        from .config import VTAConfig
        from .layer import CompiledLayer

        cfg = VTAConfig.from_dict(header["config"])
        cached = _CACHE[header["digest"]] = (CompiledLayer.from_bytes(raw[_HEAD.size + size :].tobytes(), cfg), cfg)
    return _Layer(header["name"], header.get("op", ""), *cached)


def _simulator(cfg):
    sim = _SIMULATORS.get(cfg)
    if sim is None:
        from .simulator import Simulator

        sim = _SIMULATORS[cfg] = Simulator(cfg)
    return sim


def run_layer_packed(x, blob, out) -> None:
    """``accelc.vta.run_layer(x: int8, blob: uint8, out: int8)``: run one layer on the simulator."""
    from .layer import run_layer

    layer = _decode(np.from_dlpack(blob))
    start = time.perf_counter()
    y, stats = run_layer(layer.compiled, np.from_dlpack(x), force_serial=_STATE.force_serial,
                         simulator=_simulator(layer.cfg))
    wall = time.perf_counter() - start
    out.copyfrom(np.ascontiguousarray(y, dtype=np.int8))
    if _STATE.runs is not None:
        _STATE.runs.append(LayerRun(layer.name, layer.op, stats, wall, _STATE.force_serial))


_REGISTERED = False


def register() -> None:
    """Make ``accelc.vta.run_layer`` callable by Relax VMs in this process (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        import tvm

        tvm.register_global_func(RUN_LAYER, run_layer_packed, override=True)
        _REGISTERED = True


@contextlib.contextmanager
def profiling(force_serial: bool = False):
    """Collect a ``LayerRun`` per VTA layer call made inside the block (this thread)."""
    saved = (_STATE.force_serial, _STATE.runs)
    _STATE.force_serial, _STATE.runs = force_serial, []
    try:
        yield _STATE.runs
    finally:
        _STATE.force_serial, _STATE.runs = saved


def layer_table(vm_or_module) -> list[dict]:
    """The layer table ``VTAOffload`` embedded (``[]`` for an artifact without one)."""
    try:
        value = vm_or_module[LAYER_TABLE_FUNC]()
    except Exception:  # not a vta artifact: no such function
        return []
    return json.loads(value.numpy().tobytes())["layers"]
