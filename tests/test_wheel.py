"""The wheel is complete: `accelc.passes`/`accelc.targets` inside `accelc/` (no top-level
`passes`/`targets` package), the VTA simulator library, and the native sources the aarch64
runner is cross-built from (so `--target arm` works from a wheel install, not only a checkout)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=1200,
    )
    (wheel,) = tmp_path.glob("accelc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/", 1)[0] for n in names}
    assert "passes" not in tops and "targets" not in tops
    assert "accelc/passes/sparse_rewrite.py" in names and "accelc/targets/registry.py" in names
    assert any(n.startswith("accelc/targets/vta/libaccelc_vta_sim") for n in names)
    for src in ("CMakeLists.txt", "runner/accelc_run.cc", "runner/CMakeLists.txt", "cmake/aarch64-linux-gnu.cmake",
                "cmake/AccelcTVM.cmake", "targets/vta/sim/vta_sim.cc"):
        assert f"accelc/_native_src/{src}" in names, src


def test_source_dir_prefers_the_shipped_copy(tmp_path, monkeypatch):
    """A wheel install has no checkout above the package: cross.source_dir() must find the
    copy installed as accelc/_native_src (and $ACCELC_SOURCE_DIR still wins)."""
    from accelc import cross

    pkg = tmp_path / "site" / "accelc"
    shipped = pkg / "_native_src"
    for rel in ("runner/accelc_run.cc", f"cmake/{cross.TRIPLE}.cmake", "CMakeLists.txt"):
        (shipped / rel).parent.mkdir(parents=True, exist_ok=True)
        (shipped / rel).write_text("")
    monkeypatch.delenv("ACCELC_SOURCE_DIR", raising=False)
    monkeypatch.setattr(cross, "__file__", str(pkg / "cross.py"))
    assert cross.source_dir() == shipped.resolve()
    monkeypatch.setenv("ACCELC_SOURCE_DIR", str(REPO))
    assert cross.source_dir() == REPO
