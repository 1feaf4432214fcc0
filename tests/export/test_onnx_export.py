"""check_graph: the properties of model.onnx the service relies on, each refused with its own message."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.onnx_export import ExportError, check_graph

pytestmark = pytest.mark.train  # export.onnx_export imports torch


def graph(path, batch="batch", outputs=("logits", "cam", "features"), opset=18, external=False, domain=None, asked=18):
    """image -> cam (identity) -> logits and features (spatial means): the real model's interface on a
    toy body."""
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Identity", ["image"], [outputs[1]]),
        helper.make_node("ReduceMean", [outputs[1], "axes"], [outputs[0]], keepdims=0),
        helper.make_node("ReduceMean", ["image", "axes"], [outputs[2]], keepdims=0),
    ]
    if domain:
        nodes.append(helper.make_node("Custom", [outputs[0]], ["unused"], domain=domain))
    g = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [
            helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, [batch, 1]),
            helper.make_tensor_value_info(outputs[1], TensorProto.FLOAT, [batch, 1, 8, 8]),
            helper.make_tensor_value_info(outputs[2], TensorProto.FLOAT, [batch, 1]),
        ],
        [axes],
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(g, opset_imports=imports)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, size_threshold=0, location="toy.onnx.data")
    else:
        onnx.save(model, str(path))
    return path, asked


def test_a_good_graph_passes(tmp_path):
    assert check_graph(*graph(tmp_path / "m.onnx")).graph.output[0].name == "logits"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": 1}, "fixed batch dimension"),
        ({"outputs": ("scores", "cam", "features")}, "expected [image] ('logits', 'cam', 'features')"),
        ({"asked": 19}, "has opset 18, asked for 19"),
        ({"external": True}, "weight(s) in external files"),
        ({"domain": "com.example"}, "custom ops or functions"),
    ],
)
def test_each_broken_property_is_named(tmp_path, kwargs, message):
    with pytest.raises(ExportError) as caught:
        check_graph(*graph(tmp_path / "m.onnx", **kwargs))
    assert message in str(caught.value)
