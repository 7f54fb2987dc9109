"""accelc run --profile on the llvm target: every kernel timed in context, with its rule and
GFLOP/s from the kernel table embedded at compile time."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import accelc
from accelc.targets.llvm_cpu.profile import KERNEL_TABLE_FUNC, embedded_table, profile


def _conv_model():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 16, 3, 3)) * 0.1).astype("float32")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 14, 14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 7, 7])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "conv.so"
    compiled = accelc.compile(_conv_model(), target_options={"num-cores": 2}, tuning_records=None)
    compiled.export(str(path))
    return compiled, path


def test_table_has_rules_and_exact_flops(artifact):
    compiled, _ = artifact
    table = embedded_table(compiled._machine())
    conv = [v for k, v in table.items() if "conv2d" in k]
    assert len(conv) == 1 and conv[0]["rule"] == "Conv2dNCHWc"
    assert conv[0]["flops"] == 2 * 16 * 32 * 3 * 3 * 14 * 14  # multiply-adds only
    pools = [v for k, v in table.items() if "pool" in k]
    assert pools and all(v["flops"] is None for v in pools)  # a max is no multiply-add


def test_profile_reports_every_kernel_in_context(artifact):
    compiled, _ = artifact
    import tvm

    x = np.random.default_rng(1).standard_normal((1, 16, 14, 14)).astype("float32")
    text = profile(compiled._machine(), [tvm.runtime.tensor(x)], runs=3)
    rows = [l for l in text.splitlines() if "conv2d" in l]
    assert len(rows) == 1 and "Conv2dNCHWc" in rows[0]
    gflops = float(rows[0].split()[5])
    assert gflops > 0
    assert re.search(r"total: kernels [\d.]+ ms; run [\d.]+ ms instrumented", text)
    assert "max_pool" in text and KERNEL_TABLE_FUNC not in text


def test_cli_profile_and_bad_flag(artifact):
    _, path = artifact
    run = [sys.executable, "-m", "accelc", "run", str(path)]
    ok = subprocess.run(run + ["--profile"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "GFLOP/s" in ok.stdout and "Conv2dNCHWc" in ok.stdout
    bad = subprocess.run(run + ["--profile", "--force-serial"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "--force-serial" in bad.stderr
