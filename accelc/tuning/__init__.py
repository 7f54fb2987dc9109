"""Auto-tuning: ``accelc tune`` (MetaSchedule search), its crash-safe log, and applying the
log in ``accelc compile --tuning-records``.

    records.py               the log format (documented there), loading and appending
    tasks.py                 a model's kernels exactly as compile schedules them
    builder.py, worker.py    persistent build/measure worker processes
    rpc.py                   remote measurement and ``accelc run`` through an RPC tracker
    tuner.py                 the session: baselines, task choice, search rounds, resume
    progress.py              live display, final table, plot
    apply_tuning_records.py  the compile-side pass
    cli.py                   ``accelc tune`` arguments

Nothing here imports TVM at import time: ``accelc --help`` stays fast.
"""

from __future__ import annotations

__all__ = ["TuneOptions", "TuningRecords", "add_tune_parser", "load_records", "tune"]


def __getattr__(name):
    if name in ("TuneOptions", "tune"):
        from . import tuner

        return getattr(tuner, name)
    if name == "TuningRecords":
        from .apply_tuning_records import TuningRecords

        return TuningRecords
    if name == "add_tune_parser":
        from .cli import add_tune_parser

        return add_tune_parser
    raise AttributeError(name)


def load_records(path, target):
    """The records of ``path`` that apply to ``target`` (an ``AccelcError`` if it was tuned
    only for other targets)."""
    from accelc.errors import AccelcError

    from .apply_tuning_records import TuningRecords
    from .records import target_key

    if isinstance(path, TuningRecords):
        if path.target_key != target_key(target):
            raise AccelcError(f"tuning records are for target {path.target_key}, not {target_key(target)}")
        return path
    return TuningRecords.load(path, target)
