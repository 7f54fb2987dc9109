"""Tuning logs shipped with accelc, found for a model by the structure of its graph.

``tuning_logs/`` (in the wheel: ``accelc/tuning_logs/``; in a checkout or an editable install:
the repository's ``tuning_logs/``) holds one ``accelc tune`` log per benchmark model and
``index.json``::

    {"version": 1, "logs": [{"model": "squeezenet", "fingerprint": "3f0c...", "log": "squeezenet.jsonl",
                             "input_shapes": {"data_0": [1, 3, 224, 224]},
                             "targets": {"llvm-znver3-2c-1f0c9a2e": {"trials": 480, "tuning_minutes": 9.5}}}]}

The key is ``model_fingerprint``: a hash of the graph's structure (operators, attributes,
how tensors connect, input and weight shapes, small integer constants such as Reshape
targets) and not of weight values, so a model retrained or re-initialized finds the same
log. The log applies only to the target it was tuned for (``records.target_key``: kind,
mcpu, cores and the full target); ``find_shipped_records`` never fails: a log for another
target, or a damaged one, means default schedules and a note saying so.

    python -m accelc.tuning.shipped add NAME MODEL.onnx LOG --ship-to tuning_logs [--input-shape NAME:D0,D1,...]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

INDEX = "index.json"
_SMALL_INT_CONSTANT = 64  # integer constants up to this size are structure (shapes, axes, perms)


def logs_dir() -> Path | None:
    """The shipped logs: ``accelc/tuning_logs`` (wheel) or the checkout's ``tuning_logs``."""
    import accelc

    package = Path(accelc.__file__).resolve().parent
    for candidate in (package / "tuning_logs", package.parent / "tuning_logs"):
        if (candidate / INDEX).is_file():
            return candidate
    return None


def load_index() -> list[dict]:
    root = logs_dir()
    if root is None:
        return []
    try:
        return list(json.loads((root / INDEX).read_text()).get("logs", []))
    except (OSError, ValueError):
        return []


def shipped_logs() -> list[Path]:
    root = logs_dir()
    return [root / e["log"] for e in load_index() if root is not None and (root / e["log"]).is_file()]


# ---------------------------------------------------------------------------- fingerprint
def model_fingerprint(model, input_shapes: dict | None = None) -> str:
    """Structural hash (16 hex digits) of an ONNX graph, weight values excluded.

    Tensor names are replaced by their order of first appearance; a ``ConstantOfShape`` fed
    by a constant shape counts as a weight of that shape (the light model zoo ships its
    weights that way; with real weights the same model has initializers instead)."""
    import onnx
    from onnx import numpy_helper

    from accelc.frontend import load_onnx

    proto = load_onnx(model)
    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    ids: dict[str, int] = {}

    def tid(name: str) -> int:
        return ids.setdefault(name, len(ids)) if name else -1

    def weight(t) -> list:
        if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and _numel(t.dims) <= _SMALL_INT_CONSTANT:
            return ["int", list(t.dims), numpy_helper.to_array(t).ravel().tolist()]
        return ["w", t.data_type, list(t.dims)]

    shapes = dict(input_shapes or {})
    items: list = [sorted((o.domain, o.version) for o in proto.opset_import)]
    for vi in g.input:
        if vi.name in inits:
            continue
        dims = shapes.get(vi.name) or [d.dim_value if d.HasField("dim_value") else d.dim_param
                                        for d in vi.type.tensor_type.shape.dim]
        items.append(["in", tid(vi.name), vi.type.tensor_type.elem_type, [_dim(d) for d in dims]])
    weights: dict[str, list] = {}
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            dims = numpy_helper.to_array(inits[node.input[0]]).ravel().tolist()
            weights[node.output[0]] = ["w", value.data_type if value is not None else 1, dims]
            continue
        ins = []
        for name in node.input:
            if name in inits:
                ins.append(weight(inits[name]))
            elif name in weights:
                ins.append(weights[name])
            else:
                ins.append(tid(name))
        attrs = sorted((a.name, _attr(a)) for a in node.attribute)
        items.append([node.domain, node.op_type, ins, [tid(o) for o in node.output], attrs])
    items.append(["out", [tid(o.name) for o in g.output]])
    return hashlib.sha256(json.dumps(items, default=str).encode()).hexdigest()[:16]


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _dim(d):
    return int(d) if isinstance(d, int) or str(d).isdigit() else str(d)


def _attr(a):
    from onnx import helper, numpy_helper

    if a.type == a.TENSOR:  # a Constant's value: its shape and type, small integers in full
        t = a.t
        if t.data_type in (6, 7) and _numel(t.dims) <= _SMALL_INT_CONSTANT:
            return ["int", list(t.dims), numpy_helper.to_array(t).ravel().tolist()]
        if _numel(t.dims) <= 1:  # scalars (Clip bounds, Gelu's sqrt 2) are structure too
            return ["scalar", t.data_type, numpy_helper.to_array(t).ravel().tolist()]
        return ["w", t.data_type, list(t.dims)]
    if a.type == a.GRAPH:
        return ["graph", len(a.g.node)]
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        return [v.decode(errors="replace") if isinstance(v, bytes) else v for v in value]
    return value


# ------------------------------------------------------------------------------- lookup
def find_shipped_log(model, input_shapes: dict | None = None) -> tuple[dict, Path] | None:
    """``(index entry, log path)`` of the shipped log for this model's structure, or None."""
    entries = load_index()
    if not entries:
        return None
    try:
        resolved = _resolved_shapes(model, input_shapes)
        fingerprint = model_fingerprint(model, resolved)
    except Exception:  # noqa: BLE001  (the import reports a broken model; lookup stays silent)
        return None
    root = logs_dir()
    for entry in entries:
        if entry.get("fingerprint") == fingerprint and (root / entry["log"]).is_file():
            return entry, root / entry["log"]
    return None


def _resolved_shapes(model, input_shapes):
    from accelc.frontend import load_onnx, resolve_inputs

    proto = load_onnx(model)
    return {t.name: [int(d) for d in t.shape] for t in resolve_inputs(proto, input_shapes)}


def find_shipped_records(model, input_shapes, target):
    """``(TuningRecords or None, note or None)``: the shipped records for this model and
    ``target``; None with a note when the model has a shipped log for other targets only
    (or it does not load); ``(None, None)`` for a model without one."""
    from .apply_tuning_records import TuningRecords
    from .records import target_key

    found = find_shipped_log(model, input_shapes)
    if found is None:
        return None, None
    entry, path = found
    key = target_key(target)
    try:
        records = TuningRecords.load(path, target)
    except Exception as exc:  # noqa: BLE001  (auto-found: never an error, defaults instead)
        tuned_for = ", ".join(sorted(entry.get("targets", {}))) or "other targets"
        reason = "tuned for " + tuned_for if "tuned for target" in str(exc) else str(exc).split("\n")[0]
        return None, (f"shipped tuning log {path.name} ({entry['model']}) not used: {reason}; this compile's "
                      f"target is {key}: default schedules (tune with `accelc tune` for this target)")
    if not records.by_workload:
        return None, f"shipped tuning log {path.name} has no records for target {key}: default schedules"
    return records, f"using shipped tuning log {path} ({entry['model']}, target {key})"


def auto_records(backend, model, input_shapes, target):
    """``compile(tuning_records="auto")``: ``(records or None, note or None)``. Only for
    targets whose records are TIR kernels (not e.g. vta's tile plans)."""
    from accelc.targets import registry

    if type(backend).with_tuning_records is not registry.TargetBackend.with_tuning_records:
        return None, None
    return find_shipped_records(model, input_shapes, target)


# ------------------------------------------------------------------------------ the index
def add_log(name: str, model, log: str | Path, input_shapes: dict | None = None, ship_to: str | Path | None = None) -> dict:
    """Add or update ``name``'s entry in ``index.json`` from the tuning log ``log``:
    fingerprint, and per target the trials and tuning time. With ``ship_to`` (a logs
    directory) the log is copied there compacted: per workload and target its baseline and
    best trial, all that compile and record transfer read (a full log is ~1 kB per trial)."""
    from .records import TuningLog

    log = Path(log).resolve()
    root = log.parent
    full = log
    if ship_to is not None:
        root = Path(ship_to).resolve()
        log = root / f"{name}.jsonl"
        _write_compacted(full, log)
    index_path = root / INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"version": 1, "logs": []}
    resolved = _resolved_shapes(model, input_shapes)
    targets: dict[str, dict] = {}
    sessions: dict[tuple, list[float]] = {}
    for r in TuningLog.load(full, warn=False).records:
        t = targets.setdefault(r.target_key, {"trials": 0, "tuning_minutes": 0.0, "sessions": 0})
        if r.kind == "trial":
            t["trials"] += 1
        sessions.setdefault((r.target_key, r.data.get("session")), []).append(float(r.data.get("time", 0.0)))
    for (key, _), times in sessions.items():  # wall time of each session, first line to last
        targets[key]["tuning_minutes"] = round(targets[key]["tuning_minutes"] + (max(times) - min(times)) / 60, 1)
        targets[key]["sessions"] += 1
    entry = {"model": name, "fingerprint": model_fingerprint(model, resolved), "log": log.name,
             "input_shapes": resolved, "targets": targets}
    index["logs"] = [e for e in index["logs"] if e.get("model") != name] + [entry]
    index["logs"].sort(key=lambda e: e["model"])
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    return entry


def _write_compacted(src: Path, dst: Path) -> None:
    from .records import TuningLog, index_by_workload

    log = TuningLog.load(src, warn=False)
    lines = []
    for key in log.target_keys():
        for entry in index_by_workload(log.for_target(key)).values():
            lines += [r.data for r in (entry.baseline, entry.best) if r is not None]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in lines))


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m accelc.tuning.shipped", description="index a shipped tuning log")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="add/update a model's log in tuning_logs/index.json")
    a.add_argument("name")
    a.add_argument("model")
    a.add_argument("log")
    a.add_argument("--input-shape", action="append", default=[])
    a.add_argument("--ship-to", metavar="DIR", help="copy the log there, compacted (best trial per kernel)")
    args = p.parse_args(argv)
    from accelc.frontend import parse_input_shapes

    entry = add_log(args.name, args.model, args.log, parse_input_shapes(args.input_shape) or None, args.ship_to)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
