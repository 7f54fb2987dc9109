"""ResNet-18 end to end on ``--target vta``: where each layer runs and where the time goes.

Builds ResNet-18 (stem 7x7/2 conv + 3x3/2 max pool, 4 stages of 2 basic blocks, 64..512
channels, global average pool, 1000-way classifier) as ONNX with seeded random weights,
quantizes it (int8, shift requantize, min/max calibration on random images), compiles it for
``vta`` twice, with the default ``vta-skip-layers=0`` (stem on the host) and with ``none``
(stem on VTA), prints each placement table and ``accelc run --profile`` report, and the
stem's cost on each side: its VTA cycles against its measured host kernel time.

    .venv/bin/python benchmarks/vta_resnet18_e2e.py [--size 224] [--force-serial]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import accelc  # noqa: E402
from accelc.targets import registry  # noqa: E402


def resnet18(size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x, cin, cout, k, stride, name, relu=True):
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      strides=[stride] * 2, pads=[k // 2] * 4))
        if not relu:
            return f"{name}_c"
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]))
        return f"{name}_r"

    def block(x, cin, cout, stride, name):
        y = conv(conv(x, cin, cout, 3, stride, f"{name}a"), cout, cout, 3, 1, f"{name}b", relu=False)
        skip = x if (cin, stride) == (cout, 1) else conv(x, cin, cout, 1, stride, f"{name}p", relu=False)
        nodes.append(helper.make_node("Add", [y, skip], [f"{name}_sum"]))
        nodes.append(helper.make_node("Relu", [f"{name}_sum"], [f"{name}_out"]))
        return f"{name}_out"

    x = conv("input", 3, 64, 7, 2, "stem")
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for i in range(2):
            x = block(x, cin, cout, 2 if (i == 0 and stage > 0) else 1, f"s{stage}b{i}")
            cin = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array((rng.standard_normal((1000, 512)) * 0.05).astype(np.float32), "fc_w"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1000])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--force-serial", action="store_true", help="also profile without latency hiding")
    ap.add_argument("--skip", nargs="*", default=["0", "none"], help="vta-skip-layers values to compare")
    args = ap.parse_args(argv)

    import tvm

    from accelc.targets.vta.backend import format_layer_table
    from accelc.targets.vta.runtime import layer_table

    model = resnet18(args.size)
    calib = {"input": np.random.default_rng(1).random((4, 3, args.size, args.size), dtype=np.float32)}
    x = tvm.runtime.tensor(calib["input"][:1], tvm.cpu())
    backend = registry.get("vta")
    for skip in args.skip:
        start = time.perf_counter()
        compiled = accelc.compile(model, "vta", quantize="int8", calib=calib, calib_method="minmax",
                                  target_options={"vta-skip-layers": skip})
        print(f"\n## vta-skip-layers={skip}: ResNet-18 at {args.size}x{args.size} "
              f"(compiled in {time.perf_counter() - start:.0f} s)\n")
        vm = compiled._machine()
        print("\n".join(format_layer_table(layer_table(vm))))
        print()
        print(backend.profile(vm, [x], force_serial=args.force_serial))
    return 0


if __name__ == "__main__":
    sys.exit(main())
