"""Remote devices through TVM's RPC tracker: tuning measurements and ``accelc run``.

Start a tracker and servers the standard way::

    python -m tvm.exec.rpc_tracker --host 127.0.0.1 --port 9190
    python -m tvm.exec.rpc_server --tracker 127.0.0.1:9190 --key mydevice   # on each device

then ``accelc tune ... --rpc-tracker 127.0.0.1:9190 --rpc-key mydevice`` builds on this
host (cross-compiling with the target's export compiler) and times every trial on a device
the tracker hands out, one batch per free device in parallel; ``accelc run ARTIFACT
--rpc-tracker ... --rpc-key ...`` uploads the artifact and runs it there.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import numpy as np

from accelc.errors import AccelcError


@dataclass(frozen=True)
class RpcConfig:
    tracker: str  # HOST:PORT
    key: str
    parallel: int = 1  # devices measured at once
    session_timeout_s: float = 600.0
    request_timeout_s: float = 120.0


def parse_tracker(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port defaults to 9190, TVM's tracker port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = text.strip(), "9190"
    try:
        number = int(port)
    except ValueError:
        raise AccelcError(f"--rpc-tracker {text!r}: expected HOST:PORT") from None
    if not host or not 0 < number < 65536:
        raise AccelcError(f"--rpc-tracker {text!r}: expected HOST:PORT")
    return host, number


def tracker_devices(tracker: str, key: str) -> int:
    """How many servers with ``key`` the tracker knows; a user error if none (a request for an
    unknown key would wait forever)."""
    from tvm import rpc

    host, port = parse_tracker(tracker)
    try:
        # TVM's client retries a refused connection for 60 s; a user's typo should fail now.
        socket.create_connection((host, port), timeout=10).close()
        summary = rpc.connect_tracker(host, port).summary()
    except Exception as exc:  # noqa: BLE001  (refused, not a tracker, ...)
        raise AccelcError(f"cannot reach the RPC tracker at {host}:{port}: {' '.join(str(exc).split())[:200]}") from None
    servers = [s for s in summary.get("server_info", []) if str(s.get("key", "")).split(":", 1)[-1] == key]
    if not servers:
        known = sorted({str(s.get("key", "")).split(":", 1)[-1] for s in summary.get("server_info", [])})
        raise AccelcError(
            f"no RPC server with key {key!r} at tracker {host}:{port}"
            + (f" (keys there: {', '.join(known)})" if known else " (no server registered)")
        )
    return len(servers)


def request_session(tracker: str, key: str, *, session_timeout: float = 600.0, priority: int = 1):
    from tvm import rpc

    host, port = parse_tracker(tracker)
    return rpc.connect_tracker(host, port).request(key, priority=priority, session_timeout=session_timeout)


def make_config(tracker: str | None, key: str | None, parallel: int | None = None) -> RpcConfig | None:
    """``--rpc-tracker``/``--rpc-key`` checked against the tracker; None when not given."""
    if not tracker and not key:
        return None
    if not tracker or not key:
        raise AccelcError("--rpc-tracker and --rpc-key go together")
    devices = tracker_devices(tracker, key)
    return RpcConfig(tracker, key, parallel=max(1, parallel or devices))


# ----------------------------------------------------------------------------- accelc run
def remote_device(session, device_type: str):
    return session.cuda(0) if device_type == "cuda" else session.cpu(0)


class RemoteModel:
    """A compiled artifact running on a device from the tracker, with ``CompiledModel``'s
    ``run``/``benchmark`` interface (inputs and outputs are numpy arrays on this host)."""

    def __init__(self, compiled, tracker: str, key: str):
        from accelc.targets import registry

        if compiled._path is None:
            raise AccelcError("only an exported artifact (.so) can run remotely")
        tracker_devices(tracker, key)
        self.signature = compiled.signature
        self._device_type = registry.get(self.signature.target_name).device_type()
        self._path = str(compiled._path)
        self._session = request_session(tracker, key)
        self._vm = None

    def _machine(self):
        if self._vm is None:
            from tvm import relax

            name = f"accelc_{os.getpid()}_{int(time.time() * 1000)}_{os.path.basename(self._path)}"
            self._session.upload(self._path, name)
            module = self._session.load_module(name)
            self._device = remote_device(self._session, self._device_type)
            self._vm = relax.VirtualMachine(module, self._device)
        return self._vm

    def _args(self, inputs):
        import tvm

        vm = self._machine()
        return vm, [tvm.runtime.tensor(a, self._device) for a in self.signature.check_inputs(inputs)]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vm, args = self._args(inputs)
        result = vm["main"](*args)
        values = list(result) if not hasattr(result, "numpy") else [result]
        return {spec.name: v.numpy() for spec, v in zip(self.signature.outputs, values)}

    def benchmark(self, inputs: dict[str, np.ndarray], repeat: int = 10, warmup: int = 1) -> list[float]:
        """Latencies in ms measured on the device (``time_evaluator``: no network time)."""
        vm, args = self._args(inputs)
        for _ in range(warmup):
            vm["main"](*args)
        vm.set_input("main", *args)
        timer = vm.time_evaluator("invoke_stateful", self._device, number=1, repeat=repeat)
        return [t * 1000.0 for t in timer("main").results]
