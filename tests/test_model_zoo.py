"""accelc against onnxruntime on the nine "light" models shipped in the onnx wheel.

The shipped weights are ConstantOfShape fills, so every model outputs 1000 identical
probabilities whatever the kernels compute. Each model is therefore tested on a copy with
seeded random weights (`zoo.randomize_weights`), with the logits before the final Softmax
exposed as an extra output, and the reference is checked to vary before it is trusted.
Probabilities are held to issue 2's fp32 tolerance elementwise, logits norm-wise (see
`zoo.assert_close_normwise` for why).

Only the cheapest models run by default; the rest are `slow` (`pytest -m slow`). Measured on
the 2-core machine (load average ~1-2 from concurrent jobs), llvm target with its CPU
schedules, onnxruntime (2 threads) in the same process. "first run" is VM creation + the
first call, where LLVM code generation of the in-memory executable happens; a test costs
about prep + compile + first run. Under a load average of ~5 every time was 3-5x longer.

| model        | prep s | compile s | first run s | steady ms | onnxruntime ms |
|--------------|-------:|----------:|------------:|----------:|---------------:|
| squeezenet   |    0.3 |       5.1 |         1.5 |        10 |             11 |
| shufflenet   |    0.5 |       5.4 |         1.7 |        11 |             15 |
| resnet50     |    3.5 |       9.1 |         2.1 |       122 |            152 |
| bvlc_alexnet |    5.0 |       8.5 |         0.9 |        33 |             80 |
| zfnet512     |    6.5 |        10 |         0.8 |        87 |            145 |
| inception_v1 |    0.6 |       9.6 |         4.1 |        42 |             34 |
| inception_v2 |    3.2 |        10 |         2.8 |        47 |             64 |
| densenet121  |    1.8 |        31 |          14 |       165 |            138 |
| vgg19        |     17 |        21 |         1.2 |       316 |            403 |
"""

from __future__ import annotations

import numpy as np
import pytest
from zoo import (
    ATOL,
    RTOL,
    assert_close_normwise,
    assert_not_constant,
    expose_pre_softmax,
    final_softmax_inputs,
    light_model_names,
    load_light_model,
    max_errors,
    ort_run,
    random_feeds,
    randomize_weights,
)

# Cheap enough for the default run (table above) and three families: SqueezeNet (fire modules:
# 1x1/3x3 conv + concat, global pool), ShuffleNet (BatchNorm, grouped and depthwise conv,
# channel shuffle by reshape/transpose, residual Sum) and ResNet-50 (the flagship: deep
# BatchNorm + residual stack, Gemm head). ~30 s together on a quiet machine.
CHEAP = {"squeezenet", "shufflenet", "resnet50"}

ALL_MODELS = [
    pytest.param(name, marks=() if name in CHEAP else pytest.mark.slow)
    for name in light_model_names()
]

WEIGHT_SEED = 0
INPUT_SEED = 1


def test_zoo_is_complete():
    assert set(light_model_names()) == {
        "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
        "shufflenet", "squeezenet", "vgg19", "zfnet512",
    }
    assert CHEAP <= set(light_model_names())


def test_shipped_weights_are_fills():
    """Why the weights are replaced: as shipped, the output does not depend on the kernels."""
    model = load_light_model("squeezenet")
    assert any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    ref = next(iter(ort_run(model, random_feeds(model, INPUT_SEED)).values()))
    assert np.ptp(ref) < 1e-6


def test_randomized_weights_are_seeded_and_normalized():
    """Same seed, same model; BatchNorm calibration keeps a 50-layer residual net's logits
    O(1) instead of letting residual sums compound (ResNet-50: ~4e4 uncalibrated)."""
    base = load_light_model("shufflenet")
    a, b = randomize_weights(base, 3), randomize_weights(base, 3)
    assert a.SerializeToString() == b.SerializeToString()
    assert randomize_weights(base, 4).SerializeToString() != a.SerializeToString()
    logits = ort_run(expose_pre_softmax(a), random_feeds(a, INPUT_SEED))[final_softmax_inputs(a)[0]]
    assert 0.1 < float(np.std(logits)) < 30.0


def _prepared(name: str):
    model = expose_pre_softmax(randomize_weights(load_light_model(name), WEIGHT_SEED))
    assert not any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    return model


@pytest.mark.parametrize("name", ALL_MODELS)
def test_light_model_matches_onnxruntime(name, record_property):
    import accelc

    model = _prepared(name)
    feeds = random_feeds(model, INPUT_SEED)
    ref = ort_run(model, feeds)
    # Both sides of the final Softmax: DenseNet-121 is the one model that ends on its logits.
    assert len(ref) == (1 if name == "densenet121" else 2), list(ref)
    assert len(final_softmax_inputs(model)) == len(ref) - 1
    for key, value in ref.items():
        assert_not_constant(value, f"{name}:{key}")

    compiled = accelc.compile(model)
    assert [s.name for s in compiled.signature.inputs] == list(feeds)
    out = compiled.run(feeds)
    assert list(out) == list(ref)

    logits = set(final_softmax_inputs(model)) or set(ref)  # DenseNet's output is its logits
    for key, expected in ref.items():
        actual = out[key]
        abs_err, rel_err = max_errors(actual, expected)
        record_property(f"{key}_max_abs_err", abs_err)
        record_property(f"{key}_max_rel_err", rel_err)
        print(f"{name} {key}: max abs err {abs_err:.3g}, max rel err {rel_err:.3g}")
        if key in logits:
            assert_close_normwise(actual, expected, f"{name}:{key} (logits)")
        else:  # probabilities: the elementwise tolerance as written
            assert actual.shape == expected.shape and actual.dtype == expected.dtype, key
            np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=f"{name}:{key}")
