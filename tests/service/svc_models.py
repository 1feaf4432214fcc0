"""A tiny ONNX model that keeps the real model's contract, and its models/ folder (card included).

Built with onnx.helper (never torch): input "image" (N, 1, S, S) float32; a stride-8 average pool
gives (N, 1, S/8, S/8) "features", relu(x + 0.8) so that brightness drives them; a 1x1 conv to K
channels is "cam"; logits = mean(cam over h, w) + bias. Brighter images therefore get a higher
P(not normal). Binary: K = 1, sigmoid. Multiclass: K = 4, softmax.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from service.card import (
    CARD_FILE,
    Golden,
    InputSpec,
    ModelCard,
    ModelFile,
    OutputSpec,
    golden_input,
    sha256_bytes,
)

SIZE = 64
BINARY_LABELS = ["normal", "adenocarcinoma"]
MULTI_LABELS = ["adenocarcinoma", "large.cell.carcinoma", "normal", "squamous.cell.carcinoma"]
# Per-channel cam weight and logit bias. Feature f = relu(x + 0.8) is 0 (black) .. 4 (white).
_HEADS = {
    "binary": ([2.0], [-2.0]),  # logit = 2 mean(f) - 2: black 0.12, mid-grey 0.88, white ~1
    "multiclass": ([1.0, 0.3, -1.0, 0.1], [-2.0, -0.2, 2.0, 0.0]),  # dark: normal, bright: adeno
}


def build_graph(task: str, size: int = SIZE, slow_layers: int = 0) -> bytes:
    """The fixture model as ONNX bytes; `slow_layers` adds full-resolution convs (a few ms each)."""
    weights, bias = _HEADS[task]
    k = len(weights)
    stride = 8
    inits = [
        numpy_helper.from_array(np.array([0.8], np.float32), "shift"),
        numpy_helper.from_array(np.array(weights, np.float32).reshape(k, 1, 1, 1), "head_w"),
        numpy_helper.from_array(np.array(bias, np.float32), "head_b"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw_axes"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[stride, stride], strides=[stride, stride]),
        helper.make_node("Add", ["pooled", "shift"], ["shifted"]),
        helper.make_node("Relu", ["shifted"], ["features"]),
        helper.make_node("Conv", ["features", "head_w"], ["cam"]),
        helper.make_node("ReduceMean", ["cam", "hw_axes"], ["mean"], keepdims=0),
        helper.make_node("Add", ["mean", "head_b"], ["logits"]),
    ]
    if slow_layers:
        nodes[-1].output[0] = "fast_logits"
        nodes += _slow_branch(inits, slow_layers)
    h = size // stride
    graph = helper.make_graph(
        nodes,
        f"tiny-{task}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]),
            helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", k, h, h]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _slow_branch(inits: list, layers: int) -> list:
    """Convs whose result is added to the logits times ~0, so ORT cannot prune them."""
    width = 64
    rng = np.random.default_rng(0)
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (width, 1, 3, 3)).astype(np.float32), "slow_w0"))
    nodes = [helper.make_node("Conv", ["image", "slow_w0"], ["slow0"], pads=[1, 1, 1, 1])]
    for i in range(1, layers + 1):
        inits.append(
            numpy_helper.from_array(rng.normal(0, 0.05, (width, width, 3, 3)).astype(np.float32), f"slow_w{i}")
        )
        nodes.append(helper.make_node("Conv", [f"slow{i - 1}", f"slow_w{i}"], [f"slow{i}"], pads=[1, 1, 1, 1]))
    inits.append(numpy_helper.from_array(np.array(1e-12, np.float32), "tiny"))
    nodes += [
        helper.make_node("ReduceMean", [f"slow{layers}"], ["slow_mean"], keepdims=0),
        helper.make_node("Mul", ["slow_mean", "tiny"], ["slow_term"]),
        helper.make_node("Add", ["fast_logits", "slow_term"], ["logits"]),
    ]
    return nodes


def quantize(fp32: bytes, size: int) -> bytes:
    """A real static QDQ INT8 quantisation (onnxruntime.quantization), calibrated on ramps."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Ramps(CalibrationDataReader):
        def __init__(self) -> None:
            levels = np.linspace(-0.8, 3.2, 8, dtype=np.float32)
            self.items = iter([{"image": np.full((1, 1, size, size), v, np.float32)} for v in levels])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_static(
            str(src),
            str(dst),
            Ramps(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        return dst.read_bytes()


def golden_logits(model: bytes, size: int) -> list[float]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    logits, _ = session.run(["logits", "cam"], {"image": golden_input(size)})
    return logits[0].astype(float).tolist()


def write_model_dir(
    folder: Path, task: str = "binary", size: int = SIZE, slow_layers: int = 0, threshold: float = 0.5
) -> Path:
    """models/ as export writes it: model.onnx, model.int8.onnx and the card."""
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = build_graph(task, size, slow_layers)
    int8 = quantize(fp32, size)
    files = {}
    for variant, name, data in (("fp32", "model.onnx", fp32), ("int8", "model.int8.onnx", int8)):
        (folder / name).write_bytes(data)
        files[variant] = ModelFile(path=name, sha256=sha256_bytes(data), bytes=len(data))
    labels = BINARY_LABELS if task == "binary" else MULTI_LABELS
    card = ModelCard(
        name="chest-cancer-net",
        version="0.0.0-test",
        task=task,  # type: ignore[arg-type]
        labels=labels,
        normal_label="normal",
        threshold=threshold,
        threshold_rule="fixed (test fixture)",
        input=InputSpec(size=size, mean=0.2, std=0.25),
        outputs=OutputSpec(logits="logits", cam="cam", activation="sigmoid" if task == "binary" else "softmax"),
        files=files,
        golden=Golden(
            logits={"fp32": golden_logits(fp32, size), "int8": golden_logits(int8, size)},
            atol={"fp32": 1e-4, "int8": 1e-2},
        ),
        metrics={"test": {"auc": 0.5}},
        versions={"onnxruntime": ort.__version__},
        created_at="2025-01-01T00:00:00Z",
    )
    (folder / CARD_FILE).write_bytes(msgspec.json.encode(card))
    return folder
