"""The benchmark set (benchmarks/bench_models.py) compiles with accelc and matches onnxruntime.

MobileNetV2 (~7 s) and a small BERT layer (hidden 64) run by default; BERT-base at seq 128 is
`slow`. The light-zoo members are covered by test_model_zoo.py; here only their builders."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from zoo import assert_close_normwise, assert_not_constant, max_errors, ort_run, random_feeds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_models  # noqa: E402

INPUT_SEED = 1


def _check(model, name):
    import accelc

    feeds = random_feeds(model, INPUT_SEED)
    ref = ort_run(model, feeds)
    out = accelc.compile(model).run(feeds)
    assert list(out) == list(ref)
    for key, expected in ref.items():
        assert_not_constant(expected, f"{name}:{key}")
        print(f"{name} {key}: max abs/rel err {max_errors(out[key], expected)}")
        assert_close_normwise(out[key], expected, f"{name}:{key}")


def test_models_dict_is_the_benchmark_set():
    assert set(bench_models.MODELS) == {"squeezenet", "resnet50", "shufflenet", "inception_v1",
                                        "mobilenet_v2", "bert_encoder", "digits"}


def test_mobilenet_v2_structure_and_seed():
    a = bench_models.mobilenet_v2(seed=0)
    ops = [n.op_type for n in a.graph.node]
    assert ops.count("Conv") == 52 and ops.count("Add") == 10 and ops.count("Clip") == 35
    assert sum(n.op_type == "Conv" and any(at.name == "group" and at.i > 1 for at in n.attribute)
               for n in a.graph.node) == 17  # one depthwise conv per inverted residual
    b = bench_models.mobilenet_v2(seed=1)
    assert [n.op_type for n in b.graph.node] == ops
    assert a.graph.initializer[0].raw_data != b.graph.initializer[0].raw_data


def test_mobilenet_v2_matches_onnxruntime():
    _check(bench_models.mobilenet_v2(seed=0), "mobilenet_v2")


def test_small_bert_encoder_matches_onnxruntime():
    model = bench_models.bert_encoder(seq=16, hidden=64, heads=4, ffn=256, seed=0, batch=2)
    assert {"Softmax", "LayerNormalization", "Erf"} <= {n.op_type for n in model.graph.node}
    _check(model, "bert_small")


def test_digits_builder_fixes_the_batch():
    model = bench_models.digits(batch=3)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 1, 8, 8]
    out = ort_run(model, random_feeds(model, INPUT_SEED))
    assert next(iter(out.values())).shape == (3, 10)


def test_light_builder_refuses_other_batches():
    with pytest.raises(ValueError, match="fixed batch"):
        bench_models.MODELS["squeezenet"](batch=2)


@pytest.mark.slow
def test_bert_base_encoder_matches_onnxruntime():
    model = bench_models.bert_encoder()  # seq 128, hidden 768, 12 heads, ffn 3072
    _check(model, "bert_encoder")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "digits"])
def test_other_members_compile_and_match(name):
    _check(bench_models.MODELS[name](seed=0), name)
