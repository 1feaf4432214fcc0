"""torch -> one self-contained fp32 ONNX file with a dynamic batch axis and the (logits, cam, features)
outputs (training.model.WithFeatures: the features are what the OOD gate scores)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from training.model import ChestNet, WithFeatures

INPUT = "image"
OUTPUTS = ("logits", "cam", "features")
MIN_OPSET = 17


class ExportError(RuntimeError):
    pass


def export_fp32(model: ChestNet, path: Path, size: int, opset: int) -> onnx.ModelProto:
    """Export `model` with its features (eval mode) to `path` and check the file; returns the graph.

    The dynamo exporter is used because it folds batch norm and writes a graph without the legacy
    exporter's Identity/Constant clutter; `external_data=False` keeps weights inside the one file,
    and the batch dimension must be declared or ONNX Runtime refuses batches other than the example's.
    """
    if opset < MIN_OPSET:
        raise ExportError(f"export.opset {opset} is below the supported minimum {MIN_OPSET}")
    example = torch.zeros(2, 1, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(
            WithFeatures(model).eval(),
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"x": {0: batch}},
            verbose=False,
        )
    return check_graph(path, opset)


def check_graph(path: Path, opset: int) -> onnx.ModelProto:
    """The properties the service relies on; raises ExportError naming the first one missing."""
    proto = onnx.load(str(path), load_external_data=False)
    externals = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if externals:
        raise ExportError(f"{path.name} keeps {len(externals)} weight(s) in external files")
    onnx.checker.check_model(proto, full_check=True)
    domains = {o.domain for o in proto.opset_import} - {"", "ai.onnx"}
    if domains or proto.functions:
        raise ExportError(f"{path.name} uses custom ops or functions (domains: {sorted(domains)})")
    written = opset_of(proto)
    if written < max(opset, MIN_OPSET):
        raise ExportError(f"{path.name} has opset {written}, asked for {opset}")
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT] or outputs != list(OUTPUTS):
        raise ExportError(f"{path.name} has inputs {inputs} and outputs {outputs}, expected [{INPUT}] {OUTPUTS}")
    for value in (*proto.graph.input, *proto.graph.output):
        if not value.type.tensor_type.shape.dim[0].dim_param:
            raise ExportError(f"{path.name}: {value.name} has a fixed batch dimension")
    return proto


def opset_of(proto: onnx.ModelProto) -> int:
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
