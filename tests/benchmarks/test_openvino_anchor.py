"""The OpenVINO anchor's arithmetic (the timing itself needs .venv-openvino and runs by hand:
`make bench-openvino`): MACs counted from an ONNX graph, QDQ weights included, and the CPU's limit."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.openvino_anchor import VNNI_MACS_PER_CYCLE, count_macs, cpu_limit

onnx = pytest.importorskip("onnx", reason="counting MACs reads the graph with onnx (the `train` extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def test_macs_of_a_conv_and_a_quantized_gemm(tmp_path) -> None:
    weight = numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.zeros((4, 8), np.int8), "fc_q")
    scale = numpy_helper.from_array(np.ones((), np.float32), "s")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),  # 8 x 16 x 16 outputs, 9 MACs each
        helper.make_node("GlobalAveragePool", ["y"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("DequantizeLinear", ["fc_q", "s"], ["fc"]),
        helper.make_node("Gemm", ["f", "fc"], ["z"], transB=1),  # 4 outputs, 8 MACs each
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
        [weight, fc, scale],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    assert count_macs(path) == 8 * 16 * 16 * 9 + 4 * 8


def test_the_cpu_limit_is_macs_per_cycle_times_clock_times_cores() -> None:
    limit = cpu_limit()
    expected = VNNI_MACS_PER_CYCLE * limit["clock_mhz"] * 1e6 * limit["cores"]
    assert limit["int8_macs_per_s"] == pytest.approx(expected)
