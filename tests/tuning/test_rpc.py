"""Distributed measurement: a TVM RPC tracker and two servers on 127.0.0.1, started here."""

import subprocess
import sys

import numpy as np
import onnx
import pytest

from accelc.errors import AccelcError
from accelc.tuning.builder import MeasureConfig
from accelc.tuning.records import TuningLog
from accelc.tuning.rpc import make_config, parse_tracker
from accelc.tuning.tuner import TuneOptions, tune

from tuning_models import matmul_relu_model

pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")


@pytest.fixture(scope="module")
def tracker():
    """A tracker and two servers with key ``accelc-test``, loopback only."""
    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    trk = Tracker(host="127.0.0.1", port=19190, port_end=19290, silent=True)
    servers = [Server(host="127.0.0.1", port=19300, port_end=19400, key="accelc-test",
                      tracker_addr=("127.0.0.1", trk.port), silent=True) for _ in range(2)]
    address = f"127.0.0.1:{trk.port}"
    import time

    from tvm import rpc

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # servers register asynchronously
        info = rpc.connect_tracker("127.0.0.1", trk.port).summary()
        if len(info.get("server_info", [])) >= 2:
            break
        time.sleep(0.2)
    yield address
    for s in servers:
        s.terminate()
    trk.terminate()


def test_tracker_address_and_key_are_checked(tracker):
    assert parse_tracker("127.0.0.1:9190") == ("127.0.0.1", 9190)
    assert parse_tracker("localhost") == ("localhost", 9190)
    with pytest.raises(AccelcError):
        parse_tracker("127.0.0.1:port")
    assert make_config(tracker, "accelc-test").parallel == 2  # both devices measure at once
    with pytest.raises(AccelcError, match="no RPC server with key 'gpu'.*keys there: accelc-test"):
        make_config(tracker, "gpu")
    with pytest.raises(AccelcError, match="go together"):
        make_config(tracker, None)
    with pytest.raises(AccelcError, match="cannot reach the RPC tracker at 127.0.0.1:1"):
        make_config("127.0.0.1:1", "accelc-test")


def test_tune_measures_on_remote_devices_and_run_runs_remotely(tracker, tmp_path):
    model = tmp_path / "mm.onnx"
    onnx.save(matmul_relu_model(), model)
    log = tmp_path / "rpc.jsonl"
    result = tune(TuneOptions(
        log=str(log), model=str(model), trials=8, opt_level=1, batch=4, population=16, cost_model="random",
        measure=MeasureConfig(repeat=2, min_repeat_ms=5), rpc_tracker=tracker, rpc_key="accelc-test",
    ))
    assert result.session_trials == 8 and result.estimate_s < result.baseline_estimate_s
    records = TuningLog.load(log).records
    assert {r.data["runner"] for r in records} == {f"rpc:accelc-test@{tracker}"}
    assert sum(r.ok for r in records if r.kind == "trial") >= 6

    artifact = tmp_path / "mm.so"
    out = subprocess.run([sys.executable, "-m", "accelc", "compile", model, "-O", "1", "--tuning-records", log,
                          "-o", artifact], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for where, extra in (("local", []), ("remote", ["--rpc-tracker", tracker, "--rpc-key", "accelc-test"])):
        run = subprocess.run([sys.executable, "-m", "accelc", "run", artifact, "--input", f"x={tmp_path / 'x.npy'}",
                              "--output", tmp_path / f"{where}.npz", "--print-time", *extra],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "latency (ms)" in run.stdout
        outs[where] = np.load(tmp_path / f"{where}.npz")["y"]
    assert "RPC tracker" in run.stdout
    np.testing.assert_allclose(outs["remote"], outs["local"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outs["local"], np.maximum(x @ _weights(), 0), rtol=1e-4, atol=1e-4)


def _weights():
    from onnx import numpy_helper

    return numpy_helper.to_array(matmul_relu_model().graph.initializer[0])
