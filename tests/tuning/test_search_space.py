"""The llvm_cpu templates as a MetaSchedule search space, and record transfer between shapes.

No measurement here: records are written by hand from sampled design-space points, so the
tests check what the search can produce (every point compiles and is correct), that the
stock space is still reachable, and that knob settings carry over to other shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
from zoo import ort_run

from accelc.models import DEFAULT_INPUT_SHAPE, default_model_path
from accelc.tuning.transfer import op_tag

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits_tasks():
    from accelc.targets.llvm_cpu import search_space
    from accelc.tuning.tasks import extract_tasks

    search_space.register()
    return extract_tasks(str(default_model_path()), "llvm", input_shapes=dict(DEFAULT_INPUT_SHAPE))


def _spaces(mt, task, enabled=True):
    from accelc.targets.llvm_cpu import search_space
    from accelc.tuning.tuner import make_strategy, make_tune_context

    with mt.target, search_space.space_enabled(enabled):
        ctx = make_tune_context(task.mod, mt.target, task.name, seed=0, num_threads=1,
                                strategy=make_strategy("random", 16))
        return ctx, ctx.generate_design_space()


def _variant(sch):
    from accelc.tuning.transfer import knobs_of_trace

    knobs = knobs_of_trace(sch.trace.as_json())
    return knobs[0] if knobs else None


def test_template_kernels_get_our_design_spaces(digits_tasks):
    ops = {t.op for t in digits_tasks.tasks} - {None}
    assert ops == {"accelc.llvm_cpu.conv2d_nchwc@v4", "accelc.llvm_cpu.dense_packed@v2"}  # conv v4: passes, row cut; dense v2: wide tiles
    for task in digits_tasks.tasks:
        if task.op is None:
            continue
        _, spaces = _spaces(digits_tasks, task)
        variants = sorted(_variant(s) for s in spaces)
        expected = ["k_passes", "kw_outer", "kw_unrolled"] if "conv" in task.op else ["k_blocked", "panel_major", "row_major"]
        assert variants == expected, task.name
        for s in spaces:  # sealed: no stock rule touched the kernel after the template
            kinds = {i.kind.name for i in s.trace.insts}
            assert "SamplePerfectTile" in kinds
            assert not any(str(i.attrs[0]).startswith("meta_schedule.") for i in s.trace.insts
                           if i.kind.name == "Annotate"), task.name


def test_settings_of_another_template_version_do_not_transfer(digits_tasks):
    """A knob setting tuned on an older conv template (v1: one output-channel block in the
    register tile; v2: the whole reduction in each tile; v3: always cut by output channels)
    is no evidence for v4: ``nearest`` finds nothing for a v4 kernel, a v4 setting is found
    (shipped logs from before the change must not steer the new kernels)."""
    from accelc.tuning.transfer import KnobSetting, nearest

    task = next(t for t in digits_tasks.tasks if t.op == "accelc.llvm_cpu.conv2d_nchwc@v4")
    shapes = tuple(tuple(s) for s in task.shapes)

    def setting(op):
        return KnobSetting(op, shapes, "kw_unrolled", (1, 4), "w", "t", 1e-4, 2e-4)

    for old_op in ("accelc.llvm_cpu.conv2d_nchwc", "accelc.llvm_cpu.conv2d_nchwc@v2", "accelc.llvm_cpu.conv2d_nchwc@v3"):
        assert nearest({old_op: [setting(old_op)]}, task.op, task.shapes) == []
    new = {task.op: [setting(task.op)]}
    assert [d for d, _ in nearest(new, task.op, task.shapes)] == [0.0]


def test_stock_space_is_metaschedules_own(digits_tasks):
    task = next(t for t in digits_tasks.tasks if t.op == "accelc.llvm_cpu.conv2d_nchwc@v4")
    _, spaces = _spaces(digits_tasks, task, enabled=False)
    assert spaces and all(_variant(s) is None for s in spaces)
    assert any(i.kind.name == "Annotate" and str(i.attrs[0]).startswith("meta_schedule.")
               for s in spaces for i in s.trace.insts)


def test_every_decision_replays(digits_tasks):
    """MetaSchedule samples a space by replaying its trace with fresh decisions: every
    decision must give the same loops at every step (a tile knob at 1 once dropped a unit loop,
    and BERT's dense kernels could not be searched)."""
    import sys
    from pathlib import Path

    import tvm
    from tvm import s_tir

    from accelc.targets.llvm_cpu import search_space
    from accelc.tuning.tasks import extract_tasks

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_models

    bert = extract_tasks(bench_models.bert_encoder(seq=16, hidden=64, heads=4, ffn=256), "llvm")
    checked = 0
    for mt in (digits_tasks, bert):
        for task in (t for t in mt.tasks if t.op is not None):
            sch = s_tir.Schedule(task.mod)
            block = next(b for b in sch.get_child_blocks(sch.get_sblock("root"))
                         if "schedule_rule" in sch.get(b).annotations)
            with mt.target:
                spaces = search_space.SPACES[op_tag(task.op)](sch, block)
            for space in spaces:
                for seed in range(1, 9):
                    tvm.s_tir.Trace(space.trace.insts, {}).apply_to_schedule(
                        s_tir.Schedule(task.mod, seed=seed), remove_postproc=True)
                    checked += 1
    assert checked >= 8 * 8


def _fake_log(path, mt, picks):
    """A log with one winning trial per (task, schedule) in ``picks`` and slower baselines."""
    from accelc.tuning.records import TuningLog, make_record, plain_json
    from accelc.tuning.tuner import _kernel_fields

    lines = []
    for task, sch in picks:
        fields = _kernel_fields(task)
        lines.append(make_record("baseline", mt.target, workload=task.workload, task=task.name, session="t",
                                 schedule="", sch_hash="0", latency_s=2e-3, run_secs=[2e-3], **fields))
        lines.append(make_record("trial", mt.target, workload=task.workload, task=task.name, session="t",
                                 trace=plain_json(sch.trace.as_json(remove_postproc=False)), sch_hash="1",
                                 latency_s=1e-3, run_secs=[1e-3], **fields))
    TuningLog(path).append(lines)


def test_sampled_points_compile_and_match_onnxruntime(digits_tasks, tmp_path):
    """Random points of every template space (not the default ones) give correct models."""
    import onnx

    import accelc
    from tvm.s_tir.meta_schedule.database import MemoryDatabase

    picks = []
    for task in digits_tasks.tasks:
        if task.op is None:
            continue
        ctx, spaces = _spaces(digits_tasks, task)
        ctx.pre_tuning(max_trials=64, num_trials_per_iter=8, design_spaces=spaces, database=MemoryDatabase(),
                       cost_model=None)
        candidates = ctx.generate_measure_candidates()
        picks.append((task, candidates[len(candidates) // 2].sch))
    log = tmp_path / "fake.jsonl"
    _fake_log(log, digits_tasks, picks)

    model = onnx.load(str(default_model_path()))
    feeds = {"input": np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)}
    ref = next(iter(ort_run(model, feeds).values()))
    compiled = accelc.compile(str(default_model_path()), input_shapes=dict(DEFAULT_INPUT_SHAPE),
                              tuning_records=str(log))
    assert len(compiled.tuning.tuned) == len(picks)
    out = next(iter(compiled.run(feeds).values()))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_knob_settings_transfer_to_the_nearest_shape(digits_tasks, tmp_path):
    """One tuned conv: the model's other convs take its knobs at compile time (and stay correct)."""
    import onnx

    import accelc
    from accelc.tuning.transfer import KnobSetting, apply_setting, knobs_of_trace

    convs = [t for t in digits_tasks.tasks if t.op == "accelc.llvm_cpu.conv2d_nchwc@v4"]
    assert len(convs) >= 2
    donor = convs[-1]
    _, spaces = _spaces(digits_tasks, donor)
    sch = next(s for s in spaces if _variant(s) == "kw_outer")
    _fake_log(tmp_path / "one.jsonl", digits_tasks, [(donor, sch)])

    variant, inner = knobs_of_trace(sch.trace.as_json())
    setting = KnobSetting(donor.op, tuple(map(tuple, donor.shapes)), variant, inner, donor.workload, donor.name,
                          1e-3, 2e-3)
    moved = apply_setting(convs[0].func, setting, digits_tasks.target)
    assert moved is not None and knobs_of_trace(moved.trace.as_json())[0] == "kw_outer"
    # another op's setting does not apply
    dense = next(t for t in digits_tasks.tasks if t.op == "accelc.llvm_cpu.dense_packed@v2")
    assert apply_setting(dense.func, setting, digits_tasks.target) is None

    compiled = accelc.compile(str(default_model_path()), input_shapes=dict(DEFAULT_INPUT_SHAPE),
                              tuning_records=str(tmp_path / "one.jsonl"))
    report = compiled.tuning
    assert list(report.tuned) == [donor.names[0]]
    assert report.transferred and all(src == donor.name for src, _ in report.transferred.values())
    assert any("transferred" in line for line in report.summary())
    model = onnx.load(str(default_model_path()))
    feeds = {"input": np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)}
    np.testing.assert_allclose(next(iter(compiled.run(feeds).values())), next(iter(ort_run(model, feeds).values())),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_tuning_seeds_later_kernels_from_earlier_ones(tmp_path):
    """Kernels without trials start from the knobs of similar tuned kernels: the session's
    earlier kernels or the shipped logs' (same op)."""
    from accelc.tuning.records import TuningLog
    from accelc.tuning.tuner import TuneOptions, tune

    log = tmp_path / "digits.jsonl"
    tune(TuneOptions(log=str(log), trials=40, batch=4, progress="quiet"))
    trials = [r for r in TuningLog.load(log).records if r.kind == "trial"]
    seeded = [r for r in trials if r.data.get("transferred_from")]
    assert seeded, "no trial was seeded by transfer"
    from accelc.tuning.shipped import shipped_logs

    # donors: this session's earlier kernels, or the shipped logs' (also read for seeding)
    by_workload = {r.workload: r for r in trials}
    for path in shipped_logs():
        by_workload.update({r.workload: r for r in TuningLog.load(path).records if r.kind == "trial"})
    for r in seeded:
        assert r.data["transferred_from"] in by_workload and r.data["transferred_from"] != r.workload
        assert r.data["op"] == by_workload[r.data["transferred_from"]].data["op"]
