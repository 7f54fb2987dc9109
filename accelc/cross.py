"""Building for, running on and packaging for 64-bit ARM Linux (aarch64) from an x86-64 host.

What an aarch64 artifact needs, and where each piece comes from:

    cross compiler   ``aarch64-linux-gnu-g++`` (Debian ``g++-aarch64-linux-gnu``; override with
                     ``$ACCELC_AARCH64_CXX``): links the exported model ``.so``
    TVM runtime      ``libtvm_runtime.so`` + ``libtvm_ffi.so`` and their headers, unpacked from
                     PyPI's aarch64 wheels of the *installed* apache-tvm / apache-tvm-ffi
                     versions (an artifact needs the runtime it was compiled against)
    runner           ``accelc-run`` (runner/) cross-built by CMake with
                     ``cmake/aarch64-linux-gnu.cmake`` against that runtime
    emulator         ``qemu-aarch64`` (Debian ``qemu-user``) with the cross sysroot
                     ``/usr/aarch64-linux-gnu`` (``$ACCELC_AARCH64_SYSROOT``)

The runtime and the runner are built on first use into a per-user cache, each under a file
lock so that parallel test workers and CLI calls build it once:

    $ACCELC_CACHE_DIR (default $XDG_CACHE_HOME/accelc, i.e. ~/.cache/accelc)
      aarch64/tvm-<ver>_ffi-<ver>/
        runtime/tvm/{lib,include}, runtime/tvm_ffi/{lib,include}    (~7 MB, from ~100 MB wheels)
        runner-<hash of the runner's sources>/bin/accelc-run, lib/libtvm_*.so

The runner folder is laid out like a board install: the binary's RUNPATH is
``$ORIGIN/../lib``, so ``bin/`` + ``lib/`` copied anywhere run as they are. ``package`` puts
that folder, the model and a ``run.sh`` into one tarball.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from .errors import AccelcError, ArtifactError, TargetError

ARCH = "aarch64"
TRIPLE = "aarch64-linux-gnu"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
# The wheels' C++ libraries do not depend on the Python version; one that PyPI serves for both.
WHEEL_PYTHON = "3.11"
RUNTIME_LIBS = {"tvm": "libtvm_runtime.so", "tvm_ffi": "libtvm_ffi.so"}

_INSTALL = "apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user (or `make system-deps`)"


# ------------------------------------------------------------------------------ host tools
def host_is_aarch64() -> bool:
    return platform.machine().lower() in ("aarch64", "arm64")


def cross_cxx() -> str:
    """Path of the aarch64 C++ cross compiler; a one-line error naming the package if absent."""
    name = os.environ.get("ACCELC_AARCH64_CXX") or f"{TRIPLE}-g++"
    path = shutil.which(name)
    if path is None:
        raise TargetError(f"the aarch64 cross compiler {name} is not installed: {_INSTALL}")
    return path


def sysroot() -> Path:
    root = Path(os.environ.get("ACCELC_AARCH64_SYSROOT", f"/usr/{TRIPLE}"))
    if not (root / "lib" / "ld-linux-aarch64.so.1").exists():
        raise TargetError(f"no aarch64 C library under {root} (libc6-arm64-cross): {_INSTALL}")
    return root


def qemu() -> list[str]:
    """The command prefix that runs an aarch64 Linux binary here: qemu-aarch64 with the sysroot."""
    for name in ("qemu-aarch64", "qemu-aarch64-static"):
        path = shutil.which(name)
        if path:
            return [path, "-L", str(sysroot())]
    raise TargetError(f"qemu-aarch64 is not installed, so aarch64 artifacts cannot run here: {_INSTALL}")


def export_compiler():
    """``fcompile`` for ``export_library``: links the model .so with the cross compiler.

    A fresh function per export: TVM's cross_compiler appends each call's options to its own
    base list, so reusing one would pile up options across exports.
    """
    import tvm.support.cc

    return tvm.support.cc.cross_compiler(cross_cxx())


# ------------------------------------------------------------------------------ the cache
def cache_root() -> Path:
    if os.environ.get("ACCELC_CACHE_DIR"):
        return Path(os.environ["ACCELC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "accelc"


def tvm_versions() -> tuple[str, str]:
    """Installed (apache-tvm, apache-tvm-ffi) versions: the runtime must match the compiler."""
    try:
        return metadata.version("apache-tvm"), metadata.version("apache-tvm-ffi")
    except metadata.PackageNotFoundError as exc:
        raise AccelcError(f"cannot tell which TVM runtime to fetch: {exc.name} is not installed") from exc


def _version_dir() -> Path:
    tvm_v, ffi_v = tvm_versions()
    return cache_root() / ARCH / f"tvm-{tvm_v}_ffi-{ffi_v}"


def _lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def runtime_dir() -> Path:
    """The unpacked aarch64 runtime (``tvm/`` and ``tvm_ffi/``, each with lib/ and include/).

    ``$ACCELC_AARCH64_RUNTIME`` points at a ready one (no download). Otherwise it is unpacked
    from PyPI's aarch64 wheels on first use; pip honours ``PIP_INDEX_URL`` / ``PIP_FIND_LINKS``.
    """
    if os.environ.get("ACCELC_AARCH64_RUNTIME"):
        root = Path(os.environ["ACCELC_AARCH64_RUNTIME"])
        _check_runtime(root, "ACCELC_AARCH64_RUNTIME")
        return root
    root = _version_dir() / "runtime"
    if _runtime_complete(root):
        return root
    with _lock(root):
        if not _runtime_complete(root):
            _fetch_runtime(root)
    return root


def _runtime_complete(root: Path) -> bool:
    return all((root / pkg / "lib" / lib).is_file() for pkg, lib in RUNTIME_LIBS.items()) and (
        root / "tvm_ffi" / "include" / "tvm" / "ffi" / "function.h"
    ).is_file()


def _check_runtime(root: Path, what: str) -> None:
    if not _runtime_complete(root):
        raise AccelcError(
            f"{what}={root} is not an unpacked aarch64 TVM runtime "
            f"(expected tvm/lib/libtvm_runtime.so, tvm_ffi/lib/libtvm_ffi.so, tvm_ffi/include/)"
        )


def _fetch_runtime(root: Path) -> None:
    tvm_v, ffi_v = tvm_versions()
    staging = Path(tempfile.mkdtemp(prefix="runtime-", dir=root.parent))
    try:
        wheels = staging / "wheels"
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--only-binary=:all:", "--platform", WHEEL_PLATFORM,
            "--python-version", WHEEL_PYTHON, "-d", str(wheels),
            f"apache-tvm=={tvm_v}", f"apache-tvm-ffi=={ffi_v}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise AccelcError(
                f"cannot download the aarch64 TVM runtime (apache-tvm=={tvm_v}, "
                f"apache-tvm-ffi=={ffi_v}, {WHEEL_PLATFORM}) from PyPI: {last}; "
                f"or set ACCELC_AARCH64_RUNTIME to an unpacked one"
            )
        out = staging / "runtime"
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    pkg, _, rest = name.partition("/")
                    wanted = rest == f"lib/{RUNTIME_LIBS.get(pkg)}" or rest.startswith("include/")
                    if pkg in RUNTIME_LIBS and wanted and not name.endswith("/"):
                        z.extract(name, out)
        _check_runtime(out, "the downloaded wheels")
        if root.exists():
            shutil.rmtree(root)
        out.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------ the runner
def source_dir() -> Path:
    """accelc's native sources (CMakeLists.txt, runner/, cmake/): ``$ACCELC_SOURCE_DIR``, the
    copy a wheel installs as ``accelc/_native_src``, or the checkout this package was imported
    from (editable install)."""
    shipped = Path(__file__).resolve().parent / "_native_src"
    default = shipped if shipped.is_dir() else Path(__file__).resolve().parents[1]
    root = Path(os.environ.get("ACCELC_SOURCE_DIR") or default)
    if not (root / "runner" / "accelc_run.cc").is_file() or not (root / "cmake" / f"{TRIPLE}.cmake").is_file():
        raise AccelcError(
            f"the aarch64 runner is built from accelc's sources, which are not at {root}: "
            f"set ACCELC_SOURCE_DIR to an accelc checkout"
        )
    return root


def _runner_sources(src: Path) -> list[Path]:
    files = [src / "CMakeLists.txt", *sorted((src / "cmake").glob("*.cmake"))]
    return files + sorted(p for p in (src / "runner").rglob("*") if p.is_file())


def runner_dir() -> Path:
    """``bin/accelc-run`` + ``lib/`` (the runtime libraries) for aarch64, built on first use.

    Keyed by a hash of the runner's sources, so an edited runner is rebuilt (~30 s)."""
    src = source_dir()
    digest = hashlib.sha256()
    for path in _runner_sources(src):
        digest.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    root = _version_dir() / f"runner-{digest.hexdigest()[:12]}"
    if (root / "bin" / "accelc-run").is_file():
        return root
    runtime = runtime_dir()
    with _lock(root):
        if not (root / "bin" / "accelc-run").is_file():
            _build_runner(src, runtime, root)
    return root


def _build_runner(src: Path, runtime: Path, root: Path) -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise AccelcError("cmake is not installed; it builds the aarch64 runner (apt-get install cmake)")
    cxx = cross_cxx()
    if not cxx.endswith("g++"):
        raise AccelcError(f"the runner build needs a GCC-style cross compiler name (PREFIX-g++), got {cxx}")
    staging = Path(tempfile.mkdtemp(prefix="runner-", dir=root.parent))
    try:
        install = staging / "install"
        steps = [
            ["configure", cmake, "-S", str(src), "-B", str(staging / "build"),
             f"-DCMAKE_TOOLCHAIN_FILE={src / 'cmake' / f'{TRIPLE}.cmake'}",
             f"-DACCELC_CROSS_PREFIX={cxx[:-3]}", f"-DACCELC_CROSS_SYSROOT={sysroot()}",
             f"-DACCELC_TVM_FFI_ROOT={runtime / 'tvm_ffi'}", f"-DACCELC_TVM_ROOT={runtime / 'tvm'}",
             f"-DCMAKE_INSTALL_PREFIX={install}", "-DCMAKE_BUILD_TYPE=Release"],
            # Only the runner: other native parts (the VTA simulator) are not needed on the board.
            ["build", cmake, "--build", str(staging / "build"), "-j2", "--target", "accelc-run"],
            ["install", cmake, "--install", str(staging / "build")],
        ]
        for step, *cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                log = staging.parent / "runner-build-failed.log"
                log.write_text(proc.stdout + proc.stderr)
                raise AccelcError(f"cross-building the aarch64 runner failed (cmake {step} step); log: {log}")
        (install / "lib").mkdir(exist_ok=True)
        for pkg, lib in RUNTIME_LIBS.items():
            shutil.copy2(runtime / pkg / "lib" / lib, install / "lib" / lib)
        if not (install / "bin" / "accelc-run").is_file():
            raise AccelcError(f"the aarch64 runner build installed no bin/accelc-run under {install}")
        if root.exists():
            shutil.rmtree(root)
        install.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune_runners(root.parent, keep=3)


def _prune_runners(parent: Path, keep: int) -> None:
    """Drop all but the ``keep`` newest runner builds (each edit of the runner adds one)."""
    builds = sorted((p for p in parent.glob("runner-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in builds[:-keep]:
        shutil.rmtree(old, ignore_errors=True)  # (its empty .lock file stays: another process may hold it)


def prepare() -> Path:
    """Fetch the runtime and build the runner now (``make`` set-up, CI warm-up); return the runner dir."""
    cross_cxx()
    return runner_dir()


# ------------------------------------------------------------------------------ running
@dataclass
class QemuRunner:
    """Runs one aarch64 artifact through the cross-built ``accelc-run`` under qemu-aarch64
    (on an aarch64 host the artifact runs in-process instead). Inputs and outputs travel as
    .npy files in a temporary folder."""

    artifact: Path

    note = f"running {ARCH} artifact under qemu-aarch64"

    def _invoke(self, names: list[str], arrays: list[np.ndarray], extra: list[str]):
        prefix = qemu()  # a missing tool is reported before the slow first-use build
        runner = runner_dir() / "bin" / "accelc-run"
        with tempfile.TemporaryDirectory(prefix="accelc-qemu-") as tmp:
            args = []
            for k, (name, value) in enumerate(zip(names, arrays)):
                path = Path(tmp) / f"input_{k}.npy"
                np.save(path, value)
                args += ["--input", f"{name}={path}"]
            out_dir = Path(tmp) / "out"
            cmd = [*prefix, str(runner), str(self.artifact), *args, "--output-dir", str(out_dir), *extra]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            message = " ".join(proc.stderr.split()).removeprefix("error: ")
            if proc.returncode == 2:  # the runner's user errors (inputs, artifact): one line
                raise AccelcError(message)
            if proc.returncode != 0:
                raise RuntimeError(f"accelc-run failed under qemu-aarch64 (exit {proc.returncode}): {message}")
            # One line per output, in signature order: "output NAME: DTYPE SHAPE -> PATH".
            paths = [line.rsplit(" -> ", 1)[1] for line in proc.stdout.splitlines()
                     if line.startswith("output ") and " -> " in line]
            values = [np.load(p) for p in paths]
            latency = next((line for line in proc.stdout.splitlines() if line.startswith("latency_ms:")), "")
        return values, latency

    def run(self, names: list[str], arrays: list[np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        values, _ = self._invoke(names, arrays, ["--repeat", "1", "--warmup", "0"])
        if len(values) != len(output_names):
            raise RuntimeError(f"accelc-run wrote {len(values)} output(s), the signature declares {len(output_names)}")
        return dict(zip(output_names, values))

    def benchmark(self, names: list[str], arrays: list[np.ndarray], repeat: int, warmup: int) -> list[float]:
        """Per-run latencies in ms. The runner reports only a summary, so each timed run is one
        runner process (after ``warmup`` untimed runs in it). Under qemu this times the emulator."""
        times = []
        for _ in range(repeat):
            _, latency = self._invoke(names, arrays, ["--repeat", "1", "--warmup", str(warmup)])
            fields = dict(f.split("=", 1) for f in latency.split()[1:] if "=" in f)
            times.append(float(fields["median"]))
        return times


# ------------------------------------------------------------------------------ packaging
RUN_SH = """#!/bin/sh
# Run the accelc model in this folder on a 64-bit ARM Linux board (or under qemu-aarch64):
#   ./run.sh [--input NAME=FILE.npy ...] [--fill-mode random] [--output-dir DIR] [--repeat N]
# Outputs go to DIR/<output name>.npy (default: the current directory); ./run.sh --help for more.
# Needs glibc >= 2.34 and libstdc++ from GCC >= 11 (Debian 12, Ubuntu 22.04, Raspberry Pi OS 12).
here=$(cd "$(dirname "$0")" && pwd)
case "$(uname -m)" in
  aarch64|arm64) exec "$here/bin/accelc-run" "$here/{model}" "$@" ;;
  *) exec qemu-aarch64 -L "${{QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}}" "$here/bin/accelc-run" "$here/{model}" "$@" ;;
esac
"""


def bundle_name(output: str | Path) -> str:
    """The folder a bundle unpacks to: its file name without .tar.gz / .tgz."""
    name = Path(output).name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return name or "model"


def package(artifact: str | Path, output: str | Path) -> Path:
    """Write ``output`` (.tar.gz): ``<name>/`` with run.sh, the model .so, bin/accelc-run and
    lib/ (the TVM runtime): everything the board needs besides its C and C++ libraries."""
    from .artifact import read_signature
    from .elf import machine

    artifact, output = Path(artifact), Path(output)
    read_signature(artifact)  # an accelc artifact at all (one-line error otherwise)
    if machine(artifact) != ARCH:
        raise ArtifactError(f"{artifact} is built for {machine(artifact)}, not {ARCH}: compile it with --target arm")
    if output.is_dir():
        raise AccelcError(f"output path is a directory: {output}")
    runner = runner_dir()
    name = bundle_name(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")

    def add(tar, path: Path, arcname: str, mode: int):
        info = tar.gettarinfo(str(path), arcname=f"{name}/{arcname}")
        info.mode, info.uid, info.gid, info.uname, info.gname = mode, 0, 0, "", ""
        with open(path, "rb") as f:
            tar.addfile(info, f)

    with tempfile.TemporaryDirectory(prefix="accelc-package-") as tmp:
        run_sh = Path(tmp) / "run.sh"
        run_sh.write_text(RUN_SH.format(model="model.so"))
        with tarfile.open(partial, "w:gz") as tar:
            add(tar, run_sh, "run.sh", 0o755)
            add(tar, artifact, "model.so", 0o644)
            add(tar, runner / "bin" / "accelc-run", "bin/accelc-run", 0o755)
            for lib in sorted((runner / "lib").iterdir()):
                add(tar, lib, f"lib/{lib.name}", 0o644)
    partial.replace(output)
    return output


if __name__ == "__main__":  # `python -m accelc.cross`: warm the cache (set-up, CI)
    print(prepare())
