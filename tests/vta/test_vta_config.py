"""VTAConfig: VTA's defaults, derived quantities, serialization, validation."""

import dataclasses
import json

import pytest

from accelc.targets.vta import PRESETS, VTAConfig, VTAError, resolve_config
from vta_testutil import CONFIGS


def test_default_is_vta_bitstream():
    c = VTAConfig()
    assert c.name == "1x16_i8w8a32_15_15_18_17"
    assert (c.batch, c.block_in, c.block_out) == (1, 16, 16)
    assert (c.inp_dtype, c.wgt_dtype, c.acc_dtype, c.out_dtype) == ("int8", "int8", "int32", "int8")
    # hw_spec_const.h element sizes and depths
    assert (c.inp_elem_bytes, c.wgt_elem_bytes, c.acc_elem_bytes, c.out_elem_bytes) == (16, 256, 64, 16)
    assert (c.uop_depth, c.inp_depth, c.wgt_depth, c.acc_depth) == (8192, 2048, 1024, 2048)
    assert c.LOG_OUT_BUFF_SIZE == 15
    assert (c.uop_dst_bits, c.uop_src_bits, c.uop_wgt_bits) == (11, 11, 10)
    assert (c.uop_bgn_bits, c.uop_end_bits) == (13, 14)
    assert c.macs_per_uop == 256 and c.bus_bytes == 8


def test_default_layout_matches_hw_spec():
    lay = VTAConfig().layouts
    pos = lambda kind, name: (lay[kind][name].offset, lay[kind][name].width)  # noqa: E731
    assert pos("mem", "opcode") == (0, 3)
    assert [pos("mem", f)[0] for f in ("pop_prev", "pop_next", "push_prev", "push_next")] == [3, 4, 5, 6]
    assert pos("mem", "memory_type") == (7, 3)
    assert pos("mem", "sram_base") == (10, 16)
    assert pos("mem", "dram_base") == (26, 32)
    assert pos("mem", "y_size") == (64, 16)
    assert pos("mem", "x_pad_1") == (124, 4)
    assert pos("gemm", "uop_bgn") == (8, 13)
    assert pos("gemm", "uop_end") == (21, 14)
    assert pos("gemm", "iter_in") == (49, 14)
    assert pos("gemm", "dst_factor_out") == (64, 11)
    assert pos("gemm", "wgt_factor_in") == (118, 10)
    assert pos("alu", "alu_opcode") == (108, 3)
    assert pos("alu", "imm") == (112, 16) and lay["alu"]["imm"].signed
    assert [pos("uop", f) for f in ("dst", "src", "wgt")] == [(0, 11), (11, 11), (22, 10)]


def test_json_round_trip_and_vta_keys(tmp_path):
    for c in CONFIGS.values():
        assert VTAConfig.from_json(c.to_json()) == c
    original = {  # apache/tvm-vta config/vta_config.json
        "TARGET": "sim", "HW_VER": "0.0.2", "LOG_INP_WIDTH": 3, "LOG_WGT_WIDTH": 3,
        "LOG_ACC_WIDTH": 5, "LOG_BATCH": 0, "LOG_BLOCK": 4, "LOG_UOP_BUFF_SIZE": 15,
        "LOG_INP_BUFF_SIZE": 15, "LOG_WGT_BUFF_SIZE": 18, "LOG_ACC_BUFF_SIZE": 17}
    path = tmp_path / "vta_config.json"
    path.write_text(json.dumps(original))
    assert VTAConfig.from_json(path) == VTAConfig()
    assert VTAConfig.from_json(str(path)) == VTAConfig()
    assert resolve_config(path) == VTAConfig()
    with pytest.raises(VTAError, match="unknown VTA config keys"):
        VTAConfig.from_dict({"LOG_BLOK": 4})
    with pytest.raises(VTAError, match="contradicts"):
        VTAConfig.from_dict({"LOG_BLOCK": 4, "LOG_BLOCK_IN": 3})
    with pytest.raises(VTAError, match="not valid JSON"):
        VTAConfig.from_json("{oops")


def test_names_and_presets():
    for name, c in PRESETS.items():
        assert c.name == name
        assert VTAConfig.from_name(name) == c
        assert resolve_config(name) is c
    assert resolve_config(None) == VTAConfig()
    c = CONFIGS["1x8x16_i8w8a32"]
    assert c.name == "1x8x16_i8w8a32_15_14_17_17"
    assert VTAConfig.from_name(c.name) == c
    with pytest.raises(VTAError, match="not a VTA config name"):
        VTAConfig.from_name("16x1")


def test_non_default_config_derivations():
    c = PRESETS["2x8_i8w8a32_15_15_16_17"]
    assert (c.batch, c.block_in, c.block_out) == (2, 8, 8)
    assert c.inp_elem_shape == (2, 8) and c.wgt_elem_shape == (8, 8) and c.acc_elem_shape == (2, 8)
    assert (c.inp_elem_bytes, c.wgt_elem_bytes, c.acc_elem_bytes) == (16, 64, 64)
    assert (c.inp_depth, c.wgt_depth, c.acc_depth) == (2048, 1024, 2048)
    assert c.macs_per_uop == 128


def test_validation_errors():
    # BATCH 2 / BLOCK 8 with VTA's 256 KiB weight buffer: 4096-deep weights need 12-bit
    # factors, the GEMM instruction no longer fits in 128 bits.
    with pytest.raises(VTAError, match="GEMM instruction needs 140 bits"):
        VTAConfig(LOG_BATCH=1, LOG_BLOCK_IN=3, LOG_BLOCK_OUT=3)
    with pytest.raises(VTAError, match="LOG_ACC_WIDTH"):
        VTAConfig(LOG_ACC_WIDTH=7)
    with pytest.raises(VTAError, match="at least as wide"):
        VTAConfig(LOG_INP_WIDTH=5, LOG_ACC_WIDTH=4)
    with pytest.raises(VTAError, match="buffer depth"):
        VTAConfig(LOG_WGT_BUFF_SIZE=8)  # smaller than one 256 B weight element
    with pytest.raises(VTAError, match="must be int"):
        VTAConfig(LOG_BATCH="0")
    with pytest.raises(VTAError, match="must be int"):
        VTAConfig(LOG_BATCH=True)
    with pytest.raises(VTAError, match="FREQ_MHZ"):
        VTAConfig(FREQ_MHZ=0.0)


def test_frozen_and_hashable():
    c = VTAConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.LOG_BATCH = 1
    assert len({c, VTAConfig(), c.replace(DMA_LATENCY=10)}) == 2
    assert "256 MAC/cycle" in c.summary()
