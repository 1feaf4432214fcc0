"""fp32 ONNX -> static INT8 (QDQ, per-channel weights), calibrated on training images.

Type choice, measured on an AVX-512 VNNI Xeon (ResNet-18 body, batch 1, ORT 1.32): uint8 activations
with int8 weights run on the VNNI u8s8 kernels; int8/int8 leaves most convolutions in fp32 and was
about 2.7x slower. On x86 CPUs without VNNI, ORT advises reduce_range for u8s8; our serving targets
have VNNI, and the golden self-test in the card catches a machine whose kernels drift.
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
# MinMax kept decision agreement with fp32 as well as Percentile/Entropy on the real data and is
# several times faster to calibrate (no histograms).
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
        quantize_static(
            str(prepared),
            str(out_path),
            _Batches(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHOD,
            nodes_to_exclude=head_nodes(onnx.load(str(prepared))),
        )


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
