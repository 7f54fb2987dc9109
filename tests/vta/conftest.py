"""Fixtures for the VTA target tests (``accelc.targets.vta``, i.e. the checkout's targets/vta)."""

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _p in (_HERE,):  # vta_testutil
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from accelc.targets.vta import Simulator, VTAConfig  # noqa: E402


@pytest.fixture(scope="session")
def cfg() -> VTAConfig:
    return VTAConfig()


@pytest.fixture(scope="session")
def sim(cfg) -> Simulator:
    """The default-config simulator (builds the library on first use if needed)."""
    return Simulator(cfg)
