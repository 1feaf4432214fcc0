"""A tiny ONNX model that keeps the real model's contract, and its models/ folder (card included).

Built with onnx.helper (never torch): input "image" (N, 1, S, S) float32; a stride-8 average pool
gives (N, 1, S/8, S/8) "activations", relu(x + 0.8) so that brightness drives them; a 1x1 conv to K
channels is "cam"; logits = mean(cam over h, w) + bias. Brighter images therefore get a higher
P(not normal). Binary: K = 1, sigmoid. Multiclass: K = 4, softmax.

With `gated=True` the graph also outputs "features" (N, 1), the image's mean normalised value, and the
card carries an OOD gate (mahalanobis on that one feature) and drift references: flat images from grey
96 to 160 are in distribution, black and white ones are not (see GATE_* below).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import msgspec
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

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


def build_graph(task: str, size: int = SIZE, slow_layers: int = 0, features: bool = False) -> bytes:
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
        helper.make_node("Relu", ["shifted"], ["activations"]),
        helper.make_node("Conv", ["activations", "head_w"], ["cam"]),
        helper.make_node("ReduceMean", ["cam", "hw_axes"], ["mean"], keepdims=0),
        helper.make_node("Add", ["mean", "head_b"], ["logits"]),
    ]
    if slow_layers:
        nodes[-1].output[0] = "fast_logits"
        nodes += _slow_branch(inits, slow_layers)
    outputs = []
    if features:
        nodes.append(helper.make_node("ReduceMean", ["image", "hw_axes"], ["image_mean"], keepdims=0))
        nodes.append(helper.make_node("Flatten", ["image_mean"], ["features"], axis=1))
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1]))
    h = size // stride
    graph = helper.make_graph(
        nodes,
        f"tiny-{task}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]),
            helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["N", k, h, h]),
            *outputs,
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


# The gated fixture's OOD feature is the mean normalised value m = (grey - 0.2) / 0.25 of the input, padding
# included; in distribution: m within GATE_THRESHOLD * GATE_SPREAD of GATE_MEAN, which is flat grey from
# about 100 to 177 at 96x80. Its "training set" (the drift reference) is flat grey 100..160 at 96x80.
GATE_MEAN, GATE_SPREAD, GATE_THRESHOLD = 1.0, 0.5, 1.0
REFERENCE_GREYS = range(100, 161, 2)


def gate_fields(folder: Path, fp32: bytes, task: str, labels: list[str], spec: InputSpec) -> dict:
    """The card's trust fields for the gated fixture, and its statistics file written into `folder`:
    the drift references come from running the model on REFERENCE_GREYS through the service's code."""
    from service.card import Calibration, DriftReference, OodSpec
    from service.inference.decision import DecisionRule
    from service.inputs.imaging import load_tensor
    from service.trust import drift
    from service.trust.ood import Block, FeatureStats, OodScorer

    stats = FeatureStats((Block(0, 1, np.array([[GATE_MEAN]]), np.array([[1.0 / GATE_SPREAD**2]])),))
    data = stats.to_bytes()
    (folder / "ood_stats.npz").write_bytes(data)
    rule = DecisionRule(task, tuple(labels), "normal")
    x = np.stack([load_tensor(flat_png(v), spec) for v in REFERENCE_GREYS])
    session = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    logits, _, features = session.run(["logits", "cam", "features"], {"image": x})
    cuts = drift.grey_cuts(8)
    greys = np.stack([drift.grey_shares(t, spec, cuts) for t in x])
    reference = DriftReference(
        source=f"test fixture: flat grey {REFERENCE_GREYS.start}..{REFERENCE_GREYS.stop - 1} at 96x80",
        features={
            drift.GREY: drift.reference_feature(greys, cuts),
            drift.OOD_SCORE: drift.scalar_reference(OodScorer("mahalanobis", rule, stats)(logits, features), 4),
            drift.PROBABILITY: drift.scalar_reference(rule.cancer_probability(logits), 4),
        },
    )
    entry = ModelFile(path="ood_stats.npz", sha256=sha256_bytes(data), bytes=len(data))
    return {
        "calibration": Calibration(method="temperature", temperature=1.0),
        "ood": OodSpec(method="mahalanobis", threshold=GATE_THRESHOLD, max_false_abstain=0.05, statistics=entry),
        "drift": reference,
    }


def flat_png(value: int, size: tuple[int, int] = (96, 80)) -> bytes:
    out = io.BytesIO()
    Image.new("L", size, value).save(out, format="PNG")
    return out.getvalue()


def write_model_dir(
    folder: Path,
    task: str = "binary",
    size: int = SIZE,
    slow_layers: int = 0,
    threshold: float = 0.5,
    gated: bool = False,
) -> Path:
    """models/ as export writes it: model.onnx, model.int8.onnx and the card (`gated`: with OOD gate)."""
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = build_graph(task, size, slow_layers, features=gated)
    int8 = quantize(fp32, size)
    files = {}
    for variant, name, data in (("fp32", "model.onnx", fp32), ("int8", "model.int8.onnx", int8)):
        (folder / name).write_bytes(data)
        files[variant] = ModelFile(path=name, sha256=sha256_bytes(data), bytes=len(data))
    labels = BINARY_LABELS if task == "binary" else MULTI_LABELS
    spec = InputSpec(size=size, mean=0.2, std=0.25)
    card = ModelCard(
        name="chest-cancer-net",
        version="0.0.0-test",
        task=task,  # type: ignore[arg-type]
        labels=labels,
        normal_label="normal",
        threshold=threshold,
        threshold_rule="fixed (test fixture)",
        input=spec,
        outputs=OutputSpec(
            logits="logits",
            cam="cam",
            activation="sigmoid" if task == "binary" else "softmax",
            features="features" if gated else None,
        ),
        files=files,
        golden=Golden(
            logits={"fp32": golden_logits(fp32, size), "int8": golden_logits(int8, size)},
            atol={"fp32": 1e-4, "int8": 1e-2},
        ),
        metrics={"test": {"auc": 0.5}},
        versions={"onnxruntime": ort.__version__},
        created_at="2025-01-01T00:00:00Z",
        **(gate_fields(folder, fp32, task, labels, spec) if gated else {}),
    )
    (folder / CARD_FILE).write_bytes(msgspec.json.encode(card))
    return folder
