"""Slow end-to-end check (``pytest -m slow``): light-zoo SqueezeNet through the CPU passes."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_squeezenet_matches_onnxruntime_and_is_fully_scheduled():
    pytest.importorskip("onnxruntime")
    import zoo_e2e  # pylint: disable=import-outside-toplevel

    result = zoo_e2e.run_model("squeezenet", zoo_e2e.cpu.host_target(2), samples=5)
    assert result["rel_err"] < 1e-4, result
    assert result["fired"].get("Conv2dNCHWc", 0) >= 10, result  # 26 convs, identical ones shared
    assert not result["unscheduled"] and not result["failed"], result
