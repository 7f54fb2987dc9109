"""accelc on the onnx wheel's pytorch-converted and pytorch-operator backend test cases.

Every case is in exactly one of three lists:
- supported: compiled by accelc, outputs equal to the case's reference outputs (the .pb files
  PyTorch wrote) and to onnxruntime's where onnxruntime runs the case (it has no kernels for
  many opset-6 nodes);
- REFUSED: accelc must refuse it with a clean one-line AccelcError;
- ACCELC_BUGS: cases where accelc currently escapes with a raw exception (or a wrong answer);
  the test asserts the contract (a match or a clean AccelcError) and is a strict xfail, so
  fixing the bug turns it into an XPASS that asks for the list to be updated.

Compiling ~110 tiny models one by one costs ~1 s each in TVM's fixed overhead, so the supported
cases of one opset are merged into one model (names prefixed per case) and built once; a case
is compiled on its own only if its batch fails to build, so a failure names its case.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from zoo import ATOL, RTOL, load_case, max_errors, onnx_backend_cases, ort_run

KINDS = ("pytorch-converted", "pytorch-operator")
CASES = {p.name: p for kind in KINDS for p in onnx_backend_cases(kind)}

# Cases accelc must refuse with a clean error: case -> words the one-line message must hold.
REFUSED = {
    # opset-6 Slice takes starts/ends as attributes; TVM's importer implements only Slice-13
    # (inputs) and, for older opsets, falls back to it.
    "test_operator_index": "Slice",
}

# Raw exceptions / wrong answers found here, reported to the lead: case -> what happens.
ACCELC_BUGS = {
    # PRelu-6 with a per-channel slope of shape (C,): TVM applies the opset>=7 broadcasting
    # converter, legalization hits `assert slope.shape[0] == x.shape[axis]` in topi.nn.prelu,
    # and the AssertionError escapes accelc.compile from the pipeline.
    "test_PReLU_1d_multiparam": "raw AssertionError from topi.nn.prelu during legalization",
    "test_PReLU_2d_multiparam": "raw AssertionError from topi.nn.prelu during legalization",
    "test_PReLU_3d_multiparam": "raw AssertionError from topi.nn.prelu during legalization",
}

SUPPORTED = sorted(set(CASES) - set(REFUSED) - set(ACCELC_BUGS))

# Tolerance per dtype: fp32 as issue 2 says, fp64 tight, integers and bools exact.
TOLERANCES = {
    np.dtype("float32"): (RTOL, ATOL),
    np.dtype("float64"): (1e-9, 1e-12),
}


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype in TOLERANCES:
        rtol, atol = TOLERANCES[expected.dtype]
        # sqrt/pow of negatives: NaN where the reference has NaN, and only there
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# --------------------------------------------------------------------------------------------
# Batched compilation
# --------------------------------------------------------------------------------------------


def merge_cases(names: list[str]):
    """One model holding every case in `names`, each renamed with a prefix `c<i>_`: returns
    (model, feeds, outputs) with outputs mapping case -> {original output name: merged name}."""
    nodes, inits, inputs, outs, value_info = [], [], [], [], []
    feeds: dict[str, np.ndarray] = {}
    out_names: dict[str, dict[str, str]] = {}
    opsets, ir = set(), 3
    for i, name in enumerate(names):
        model, case_inputs, expected = load_case(CASES[name])
        prefix = f"c{i}_"
        renamed = onnx.compose.add_prefix(model, prefix)
        g = renamed.graph
        nodes += g.node
        inits += g.initializer
        inputs += g.input
        outs += g.output
        value_info += g.value_info
        feeds.update({prefix + k: v for k, v in case_inputs.items()})
        out_names[name] = {k: prefix + k for k in expected}
        opsets.add(_opset(model))
        ir = max(ir, model.ir_version)
    assert len(opsets) == 1, opsets
    graph = onnx.helper.make_graph(nodes, "backend_cases", inputs, outs, inits, value_info=value_info)
    merged = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opsets.pop())])
    merged.ir_version = ir
    return merged, feeds, out_names


@functools.cache
def _batch_outputs(opset: int):
    """{case: {output: array}} for every supported case of `opset`, from one build; or the
    exception the batch raised (its cases are then compiled one by one)."""
    import accelc

    names = [n for n in SUPPORTED if _opset(load_case(CASES[n])[0]) == opset]
    model, feeds, out_names = merge_cases(names)
    try:
        out = accelc.compile(model).run(feeds)
    except Exception as exc:  # noqa: BLE001  (the single-case compile reports it properly)
        return exc
    return {case: {k: out[m] for k, m in mapping.items()} for case, mapping in out_names.items()}


def _case_outputs(name: str) -> dict[str, np.ndarray]:
    import accelc

    model, inputs, _ = load_case(CASES[name])
    batch = _batch_outputs(_opset(model))
    if isinstance(batch, dict):
        return batch[name]
    return accelc.compile(model).run(inputs)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_case_lists_partition_the_cases():
    assert not set(REFUSED) & set(ACCELC_BUGS)
    assert set(REFUSED) | set(ACCELC_BUGS) <= set(CASES)
    assert len(CASES) == 117  # 82 pytorch-converted + 35 pytorch-operator in onnx 1.23


@pytest.mark.parametrize("name", SUPPORTED)
def test_case_matches_reference(name):
    model, inputs, expected = load_case(CASES[name])
    out = _case_outputs(name)
    assert list(out) == list(expected)
    for key, value in expected.items():
        assert_close(out[key], value, f"{name}:{key} vs the case's reference")
    try:
        ort_out = ort_run(model, inputs)
    except Exception:  # onnxruntime has no kernel for many opset-6 nodes; the .pb suffices
        return
    for key, value in ort_out.items():
        assert_close(out[key], value, f"{name}:{key} vs onnxruntime")


# Refusals that are clean but do not yet name the op that failed (reported to the lead).
UNNAMED_OP_IN_MESSAGE = {"test_operator_index"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(
        n in UNNAMED_OP_IN_MESSAGE, strict=True,
        reason="clean AccelcError, but the message does not name the op that failed"))
     for n in sorted(REFUSED)],
)
def test_refused_case_fails_cleanly(name):
    import accelc
    from accelc.errors import AccelcError

    model, _, _ = load_case(CASES[name])
    with pytest.raises(AccelcError) as info:
        accelc.compile(model)
    message = str(info.value)
    assert "\n" not in message, message
    assert REFUSED[name] in message, message


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=ACCELC_BUGS[n]))
     for n in sorted(ACCELC_BUGS)],
)
def test_known_bug_case_matches_or_fails_cleanly(name):
    """The contract for every case: the reference outputs, or a clean AccelcError."""
    import accelc
    from accelc.errors import AccelcError, InternalCompilerError

    model, inputs, expected = load_case(CASES[name])
    try:
        out = accelc.compile(model).run(inputs)
    except InternalCompilerError:
        raise  # one line for users, but a bug: never a clean refusal
    except AccelcError as exc:
        assert "\n" not in str(exc)
        return
    for key, value in expected.items():
        assert_close(out[key], value, f"{name}:{key}")


def test_report_max_errors(capsys):
    """Print the largest fp32 error over the supported cases (uses the cached batch)."""
    worst = (0.0, "")
    for name in SUPPORTED:
        _, _, expected = load_case(CASES[name])
        try:
            out = _case_outputs(name)
        except Exception:  # noqa: BLE001  (test_case_matches_reference reports it)
            continue
        for key, value in expected.items():
            if value.dtype == np.float32 and not np.isnan(value).any():
                err = max_errors(out[key], value)[0]
                worst = max(worst, (err, f"{name}:{key}"))
    with capsys.disabled():
        print(f"\nbackend cases: max fp32 abs error {worst[0]:.3g} ({worst[1]})")
