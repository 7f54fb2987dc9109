"""The benchmark set: ONNX models built in code with seeded random weights.

    MODELS[name](seed=0, batch=1) -> onnx.ModelProto

- ``mobilenet_v2``: torchvision's MobileNetV2 1.0 at 224x224 (Conv + BatchNormalization +
  Clip(0, 6), inverted residuals with Add, global average pool, Gemm 1000).
- ``bert_encoder``: one BERT-base encoder layer on ``hidden_states`` (batch, seq, hidden).
- ``squeezenet``, ``resnet50``, ``shufflenet``, ``inception_v1``: the ONNX light-zoo
  architectures (shipped inside the onnx wheel) with seeded random weights
  (``tests/zoo.py: randomize_weights``), batch 1 only.
- ``digits``: the embedded trained digits CNN (accelc/data), batch fixed to ``batch``.

Weights are drawn for their role (He-normal convolutions, BatchNorm statistics calibrated on a
seeded N(0, 1) input, see ``randomize_weights``), so outputs vary with the input and a wrong
kernel shows. Graph structure and shapes depend only on the arguments, never on the seed:
the tuning-log lookup keys on structure, so every seed of a model finds the same log.

    .venv/bin/python benchmarks/bench_models.py mobilenet_v2 -o out/mobilenet_v2.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_TESTS = Path(__file__).resolve().parent.parent / "tests"
OPSET = 17


def _zoo():
    """tests/zoo.py (the reference-side helpers: light zoo, seeded weights, onnxruntime)."""
    if str(_TESTS) not in sys.path:
        sys.path.insert(0, str(_TESTS))
    import zoo

    return zoo


# ------------------------------------------------------------------------------ MobileNetV2
# torchvision's inverted-residual settings: expansion t, output channels c, repeats n, stride s.
_MBV2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1)]


class _GraphBuilder:
    """Nodes and zero-filled float initializers; ``randomize_weights`` draws the values."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def weight(self, prefix: str, shape) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.zeros(shape, np.float32), name))
        return name

    def node(self, op: str, inputs, **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int, groups: int, relu6: bool) -> str:
        w = self.weight("conv_w", (cout, cin // groups, k, k))
        y = self.node("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4, group=groups)
        bn = [self.weight(f"bn_{p}", (cout,)) for p in ("gamma", "beta", "mean", "var")]
        y = self.node("BatchNormalization", [y, *bn], epsilon=1e-5)
        if relu6:  # Clip(0, 6) with Constant bounds: randomize_weights redraws only initializers
            y = self.node("Clip", [y, "relu6_min", "relu6_max"])
        return y


def mobilenet_v2(seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    """MobileNetV2 1.0 (torchvision layout), input ``input`` (batch, 3, 224, 224), output
    ``logits`` (batch, 1000); 3.5M weights, ~0.6 GFLOP per image."""
    g = _GraphBuilder()
    g.nodes += [
        helper.make_node("Constant", [], ["relu6_min"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Constant", [], ["relu6_max"], value=numpy_helper.from_array(np.array(6.0, np.float32))),
    ]
    x = g.conv_bn("input", 3, 32, 3, 2, 1, relu6=True)
    cin = 32
    for t, c, n, s in _MBV2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x
            if t != 1:
                y = g.conv_bn(y, cin, hidden, 1, 1, 1, relu6=True)
            y = g.conv_bn(y, hidden, hidden, 3, stride, hidden, relu6=True)  # depthwise
            y = g.conv_bn(y, hidden, c, 1, 1, 1, relu6=False)  # linear bottleneck
            x = g.node("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = g.conv_bn(x, cin, 1280, 1, 1, 1, relu6=True)
    x = g.node("GlobalAveragePool", [x])
    x = g.node("Flatten", [x], axis=1)
    w, b = g.weight("fc_w", (1000, 1280)), g.weight("fc_b", (1000,))
    g.nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        g.nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return _zoo().randomize_weights(model, seed)


# ----------------------------------------------------------------------------- BERT encoder
def bert_encoder(seq: int = 128, hidden: int = 768, heads: int = 12, ffn: int = 3072, seed: int = 0,
                 batch: int = 1) -> onnx.ModelProto:
    """One post-LN BERT encoder layer (as transformers exports it, no attention mask):

        q, k, v = x @ Wq + bq, ...                   -> (batch, heads, seq, head_dim)
        a = Softmax(q @ k^T / sqrt(head_dim)) @ v    -> (batch, seq, hidden)
        h = LayerNorm(x + a @ Wo + bo)
        y = LayerNorm(h + Gelu_erf(h @ W1 + b1) @ W2 + b2)

    Input ``hidden_states`` float32 (batch, seq, hidden), output ``output`` of the same shape.
    Weights N(0, 1/fan_in) (so activations stay O(1) and Softmax is not flat), biases
    N(0, 0.1), LayerNorm gamma U(0.5, 1.5), beta N(0, 0.1)."""
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(name, fan_in, shape):
        return const(name, (rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))))

    def small(name, shape):
        return const(name, rng.normal(0.0, 0.1, shape).astype(np.float32))

    nodes: list[onnx.NodeProto] = []

    def op(kind, inputs, out, **attrs):
        nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def linear(x, name, fan_in, fan_out):
        y = op("MatMul", [x, weight(f"{name}.weight", fan_in, (fan_in, fan_out))], f"{name}.matmul")
        return op("Add", [y, small(f"{name}.bias", (fan_out,))], f"{name}.out")

    def layer_norm(x, name):
        gamma = const(f"{name}.gamma", rng.uniform(0.5, 1.5, hidden).astype(np.float32))
        beta = small(f"{name}.beta", (hidden,))
        return op("LayerNormalization", [x, gamma, beta], f"{name}.out", axis=-1, epsilon=1e-12)

    const("heads_shape", np.array([batch, seq, heads, head_dim], np.int64))
    const("hidden_shape", np.array([batch, seq, hidden], np.int64))
    x = "hidden_states"
    q, k, v = (op("Reshape", [linear(x, f"attn.{p}", hidden, hidden), "heads_shape"], f"attn.{p}.heads")
               for p in ("query", "key", "value"))
    q = op("Transpose", [q], "attn.q_t", perm=[0, 2, 1, 3])  # (b, h, s, d)
    k = op("Transpose", [k], "attn.k_t", perm=[0, 2, 3, 1])  # (b, h, d, s)
    v = op("Transpose", [v], "attn.v_t", perm=[0, 2, 1, 3])  # (b, h, s, d)
    scores = op("MatMul", [q, k], "attn.scores")
    scaled = op("Div", [scores, const("attn.scale", np.array(np.sqrt(head_dim), np.float32))], "attn.scaled")
    probs = op("Softmax", [scaled], "attn.probs", axis=-1)
    ctx = op("MatMul", [probs, v], "attn.context")
    ctx = op("Transpose", [ctx], "attn.context_t", perm=[0, 2, 1, 3])
    ctx = op("Reshape", [ctx, "hidden_shape"], "attn.context_merged")
    attn = linear(ctx, "attn.output", hidden, hidden)
    h = layer_norm(op("Add", [x, attn], "attn.residual"), "attn.norm")

    up = linear(h, "ffn.up", hidden, ffn)
    # Gelu, erf form: 0.5 * x * (1 + erf(x / sqrt(2)))
    e = op("Erf", [op("Div", [up, const("sqrt2", np.array(np.sqrt(2.0), np.float32))], "ffn.gelu.div")],
           "ffn.gelu.erf")
    e = op("Add", [e, const("one", np.array(1.0, np.float32))], "ffn.gelu.add")
    gelu = op("Mul", [op("Mul", [up, e], "ffn.gelu.mul"), const("half", np.array(0.5, np.float32))],
              "ffn.gelu.out")
    down = linear(gelu, "ffn.down", ffn, hidden)
    y = layer_norm(op("Add", [h, down], "ffn.residual"), "ffn.norm")
    nodes.append(helper.make_node("Identity", [y], ["output"], name="output"))

    graph = helper.make_graph(
        nodes, "bert_encoder",
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [batch, seq, hidden])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, seq, hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- light zoo, digits
def _light(name: str):
    def build(seed: int = 0, batch: int = 1) -> onnx.ModelProto:
        if batch != 1:
            raise ValueError(f"{name}: the light-zoo model has a fixed batch of 1, not {batch}")
        zoo = _zoo()
        return zoo.randomize_weights(zoo.load_light_model(name), seed)

    build.__name__ = name
    build.__doc__ = f"The ONNX light-zoo {name} with seeded random weights (batch 1)."
    return build


def digits(seed: int = 0, batch: int = 1) -> onnx.ModelProto:
    """The embedded trained digits CNN (its real weights; ``seed`` is unused), input
    (batch, 1, 8, 8) with the symbolic batch fixed."""
    from accelc.models import default_model_path

    model = onnx.load(str(default_model_path()))
    for vi in list(model.graph.input) + list(model.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        if dim.dim_param:
            dim.ClearField("dim_param")
            dim.dim_value = batch
    return model


MODELS = {
    "squeezenet": _light("squeezenet"),
    "resnet50": _light("resnet50"),
    "shufflenet": _light("shufflenet"),
    "inception_v1": _light("inception_v1"),
    "mobilenet_v2": mobilenet_v2,
    "bert_encoder": bert_encoder,
    "digits": digits,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="write a benchmark model as an ONNX file")
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("-o", "--output", help="default: out/bench_models/NAME.onnx")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    out = Path(args.output or f"out/bench_models/{args.name}.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(MODELS[args.name](seed=args.seed, batch=args.batch), str(out))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
