"""The simulator library: found or built from the current sources, never a stale one."""

import os

import pytest

from accelc.targets.vta import simulator as simmod


@pytest.mark.skipif("ACCELC_VTA_SIM_LIB" in os.environ, reason="explicit ACCELC_VTA_SIM_LIB in use")
def test_loaded_library_matches_sources():
    path = simmod.find_library()
    lib = simmod._load()
    assert path.name == simmod.LIB_FILENAME
    assert lib.vta_sim_abi_version() == simmod.ABI_VERSION
    assert lib.vta_sim_source_hash().decode() == simmod.source_hash()


def test_stale_library_is_rejected():
    assert simmod._acceptable(simmod.find_library(), "0" * 64) is None
    assert simmod._acceptable(simmod.find_library(), None) is not None


@pytest.mark.slow
def test_build_on_demand(tmp_path):
    """CMake standalone build of targets/vta/sim into a fresh directory (what a checkout without
    a built library does on first use)."""
    path = simmod.build_library(tmp_path)
    assert path == tmp_path / simmod.LIB_FILENAME
    assert simmod._acceptable(path, simmod.source_hash()) is not None
    assert [p.name for p in tmp_path.iterdir()] == [simmod.LIB_FILENAME]  # build tree removed
