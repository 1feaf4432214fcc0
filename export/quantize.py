"""fp32 ONNX -> static INT8 (QDQ, per-channel weights), calibrated on training images.

Type choice, measured on this project's AVX-512 VNNI Xeon (ChestNet, batch 1, ORT 1.32): uint8
activations with int8 weights run ORT's VNNI u8s8 kernels, 3.1-3.4x faster than fp32 on one thread;
int8/int8 ran no faster than fp32 (2.7-2.9x slower than u8s8). ORT advises reduce_range for u8s8 on
x86 CPUs without VNNI; on such a machine the card's golden self-test shows whether the kernels drift.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from export.onnx_export import INPUT, OUTPUTS

CALIBRATION_BATCH = 16
# MinMax matched Percentile and Entropy in decision agreement and probability error on the real
# data (binary and multiclass) and calibrates 1.5-3x faster (no histograms).
METHOD = CalibrationMethod.MinMax


class _Batches(CalibrationDataReader):
    def __init__(self, images: np.ndarray) -> None:
        self._batches = iter(np.array_split(images, max(1, len(images) // CALIBRATION_BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: np.ascontiguousarray(batch, dtype=np.float32)}


def calibration_subset(images: np.ndarray, count: int) -> np.ndarray:
    """`count` images spread evenly over the split (deterministic, so the INT8 model is reproducible)."""
    if count >= len(images):
        return images
    return images[np.linspace(0, len(images) - 1, count).round().astype(int)]


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Write the static INT8 model for `fp32_path` to `out_path`."""
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference + graph fusion first, as ORT recommends, so QDQ pairs land on fused convs.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        proto = onnx.load(str(prepared))
        quantize_static(
            str(prepared),
            str(out_path),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHOD,
            nodes_to_exclude=sorted(set(head_nodes(proto)) | feature_only_nodes(proto)),
        )


def feature_only_nodes(proto: onnx.ModelProto) -> set[str]:
    """The nodes that compute the features output and nothing else (the stages' means and deviations).

    Kept in fp32 for the same reason as the head: the OOD score is a distance in these statistics, and an
    8-bit step in each would move it; they cost a few reductions per stage.
    """
    return _ancestors(proto, OUTPUTS[2]) - _ancestors(proto, OUTPUTS[0])


def _ancestors(proto: onnx.ModelProto, output: str) -> set[str]:
    producers = {out: node for node in proto.graph.node for out in node.output}
    seen, todo = set(), [output]
    while todo:
        node = producers.get(todo.pop())
        if node is not None and node.name not in seen:
            seen.add(node.name)
            todo.extend(node.input)
    return seen


def head_nodes(proto: onnx.ModelProto) -> list[str]:
    """The classifier conv that makes `cam` and everything after it (the mean and bias).

    Kept in fp32: the head is ~0.01% of the compute, and quantising its output to 8 bits would put
    a quantisation step into every logit and heatmap value.
    """
    producers = {out: node for node in proto.graph.node for out in node.output}
    start = producers[OUTPUTS[1]]
    head, frontier = {start.name}, set(start.output)
    changed = True
    while changed:
        changed = False
        for node in proto.graph.node:
            if node.name not in head and frontier.intersection(node.input):
                head.add(node.name)
                frontier.update(node.output)
                changed = True
    return sorted(head)
