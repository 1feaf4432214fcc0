"""The model card: the one contract between the export stage (writer) and the service (reader).

Every fact the service needs about the model (labels, threshold, preprocessing, output names, file
hashes, the golden self-test) is written here once by export and read here once by the service.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
import numpy as np

CARD_FILE = "model.json"
NORMAL_LABEL = "normal"  # every other label is a cancer class
# The canonical label names of each task, normal first; ingest maps dataset folder names onto them.
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "binary": ("normal", "adenocarcinoma"),
    "multiclass": ("normal", "adenocarcinoma", "large_cell_carcinoma", "squamous_cell_carcinoma"),
}
MIN_INPUT_SIZE = 32  # ResNet-18 downsamples by 32: a smaller input leaves no feature map


def labels_for(task: str) -> list[str]:
    return list(TASK_LABELS[task])


def logit_count(task: str, labels: Sequence[str]) -> int:
    """The one rule for the model's output width: a binary task has one logit (sigmoid, P(not normal)),
    a multiclass task one logit per label (softmax). Training, export and the service all use it."""
    return 1 if task == "binary" else len(labels)


def activation_for(task: str) -> Literal["sigmoid", "softmax"]:
    return "sigmoid" if task == "binary" else "softmax"


class DicomWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The grey window a DICOM slice is shown through: Hounsfield units level - width/2 .. level + width/2
    map linearly onto grey 0..255 (service.inputs.dicom). The defaults are the lung window, the view the
    Kaggle training screenshots were taken in; a card without the field (older exports) gets them."""

    width: float = 1500.0  # HU
    level: float = -600.0  # HU


class InputSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How raw pixels become the model's input tensor (see service.inputs.imaging.preprocess)."""

    size: int  # square side, pixels
    mean: float  # on the 0..1 grey scale
    std: float
    channels: Literal[1] = 1  # grey (ITU-R 601 luma); colour and alpha are flattened onto black
    resize: Literal["letterbox"] = "letterbox"  # longest side to `size`, centred, padded with 0
    interpolation: Literal["bilinear"] = "bilinear"
    layout: Literal["NCHW"] = "NCHW"
    dicom_window: DicomWindow = DicomWindow()  # how a DICOM slice becomes the grey image above


class OutputSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    logits: str  # (N, C) for multiclass, (N, 1) for binary
    cam: str  # (N, C, h, w); logits == cam.mean((2, 3)) + bias, so the heatmap is exact
    activation: Literal["sigmoid", "softmax"]
    features: str | None = None  # (N, D) pooled features, what the mahalanobis OOD score reads


class Calibration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Temperature scaling fitted on the validation split: probabilities are softmax/sigmoid(logits / T)."""

    method: Literal["none", "temperature"] = "none"
    temperature: float = 1.0
    ece_test_before: float | None = None  # expected calibration error of P(not normal) on the test split
    ece_test_after: float | None = None


# How the OOD gate scores an image (service/trust/ood.py); the feature methods read the features output.
# The order breaks ties in the pipeline's choice (training.ood_fit.choose): the earlier wins.
OodMethod = Literal["mahalanobis", "multilayer", "energy", "max_softmax", "knn"]
OOD_METHODS: tuple[str, ...] = get_args(OodMethod)
FEATURE_OOD_METHODS: tuple[str, ...] = ("mahalanobis", "multilayer", "knn")


class OodSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The out-of-distribution gate: images scoring above `threshold` are not answered (service.trust.ood)."""

    method: OodMethod
    threshold: float
    max_false_abstain: float  # the share of validation images the threshold may flag (it flags at most that)
    statistics: ModelFile | None = None  # npz: class means and shared precision per block, or knn's bank
    evaluation: dict[str, Any] = {}  # AUROC and flagged share per OOD set (reports/ood.json)


class DriftFeature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A feature's reference distribution: `reference[i]` is the share in bin i, bins cut at `cuts`."""

    cuts: list[float]  # ascending; len(cuts) + 1 bins
    reference: list[float]


class DriftReference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str  # which images the reference comes from
    features: dict[str, DriftFeature]


class ModelFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str  # relative to the card's folder
    sha256: str
    bytes: int


class Golden(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Expected logits for `golden_input(size)` per variant; the service checks them at start."""

    logits: dict[str, list[float]]
    atol: dict[str, float]


class ModelCard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    version: str
    task: Literal["binary", "multiclass"]
    labels: list[str]
    normal_label: str  # every other label is a cancer class; "probability" means P(not normal)
    threshold: float  # on P(not normal), chosen on the validation split
    threshold_rule: str
    input: InputSpec
    outputs: OutputSpec
    files: dict[str, ModelFile]  # keyed by variant
    golden: Golden
    calibration: Calibration = Calibration()
    ood: OodSpec | None = None
    drift: DriftReference | None = None
    metrics: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    data_manifest_sha256: str = ""
    params_sha256: str = ""
    versions: dict[str, str] = {}
    created_at: str = ""

    @property
    def logits_per_image(self) -> int:
        return logit_count(self.task, self.labels)


class CardError(Exception):
    """The card is missing, unreadable, or does not match the files beside it."""


def read_card(model_dir: Path) -> ModelCard:
    path = Path(model_dir) / CARD_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CardError(f"model card not found: {path} (run `dvc repro` to build the model)") from None
    try:
        card = msgspec.json.decode(raw, type=ModelCard)
    except msgspec.ValidationError as exc:
        raise CardError(f"model card {path} is invalid: {exc}") from None
    except msgspec.DecodeError as exc:
        raise CardError(f"model card {path} is not valid JSON: {exc}") from None
    validate_card(card)
    return card


def validate_card(card: ModelCard) -> None:
    """Checks that the type system cannot express; raises CardError."""
    problems = []
    if card.normal_label not in card.labels:
        problems.append(f"normal_label {card.normal_label!r} is not one of the labels")
    if len(set(card.labels)) != len(card.labels) or len(card.labels) < 2:
        problems.append("labels must be at least two distinct names")
    if card.task == "binary" and len(card.labels) != 2:
        problems.append("a binary card needs two labels")
    if card.outputs.activation != activation_for(card.task):
        problems.append(f"a {card.task} card needs a {activation_for(card.task)} output")
    if not 0.0 < card.threshold < 1.0:
        problems.append(f"threshold {card.threshold} is not in (0, 1)")
    if card.input.size < MIN_INPUT_SIZE or card.input.std <= 0:
        problems.append(f"input size must be >= {MIN_INPUT_SIZE} and std > 0")
    if not card.input.dicom_window.width > 0:
        problems.append(f"the DICOM window width {card.input.dicom_window.width} is not > 0")
    if not card.files:
        problems.append("no model files listed")
    if not card.calibration.temperature > 0:
        problems.append(f"calibration temperature {card.calibration.temperature} is not > 0")
    feature_gate = card.ood is not None and card.ood.method in FEATURE_OOD_METHODS
    if feature_gate and (card.ood.statistics is None or card.outputs.features is None):
        problems.append(f"a {card.ood.method} OOD gate needs its statistics file and a features output")
    for name, feature in card.drift.features.items() if card.drift else ():
        if len(feature.reference) != len(feature.cuts) + 1 or feature.cuts != sorted(feature.cuts):
            problems.append(f"drift feature {name!r} needs ascending cuts and one more reference share")
    if problems:
        raise CardError("model card is inconsistent: " + "; ".join(problems))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(model_dir: Path, card: ModelCard, variant: str) -> bytes:
    """The bytes of one ONNX file, only if they match the card's sha256."""
    entry = card.files.get(variant)
    if entry is None:
        raise CardError(f"model card has no {variant!r} file (has: {', '.join(card.files)})")
    return read_file_verified(model_dir, entry)


def read_file_verified(model_dir: Path, entry: ModelFile) -> bytes:
    """The bytes of a file the card lists (a model, the OOD statistics), only if they match its sha256."""
    path = Path(model_dir) / entry.path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CardError(f"model file not found: {path}") from None
    digest = sha256_bytes(data)
    if digest != entry.sha256:
        raise CardError(f"model file {path} does not match its card: sha256 {digest[:12]}… != {entry.sha256[:12]}…")
    return data


def golden_input(size: int) -> np.ndarray:
    """A fixed, normalised (1, 1, size, size) float32 tensor: rings and a bright blob.

    Deterministic arithmetic only (no RNG, no files) so export and service build the same input.
    """
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    radius = np.sqrt(xx**2 + yy**2)
    rings = 0.5 + 0.5 * np.cos(12.0 * radius)
    blob = np.exp(-((xx - 0.3) ** 2 + (yy + 0.2) ** 2) / 0.02)
    image = np.clip(0.6 * rings * (radius < 0.9) + blob, 0.0, 1.0)
    return ((image - 0.5) / 0.25).astype(np.float32)[None, None]
