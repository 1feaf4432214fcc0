"""The model card (service.card.ModelCard), written once here from the stage's inputs and results."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort

from export.onnx_export import INPUT, OUTPUTS
from service.card import (
    CARD_FILE,
    NORMAL_LABEL,
    Calibration,
    DriftReference,
    Golden,
    ModelCard,
    ModelFile,
    OodSpec,
    OutputSpec,
    activation_for,
    golden_input,
    read_card,
    sha256_bytes,
)
from training.data import input_spec
from training.params import Params

FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
OOD_STATS_FILE = "ood_stats.npz"  # beside the models when the OOD method reads features
# Allowed drift of the golden logits on the serving machine. fp32: CPU kernels differ in summation
# order by ~1e-5. int8: ORT's fused integer kernels and its unfused QDQ reference (what a machine
# without those kernels runs) differed by up to 0.11 logit over 101 real test images; 0.2 leaves room
# for that, while the fp32 and int8 models of one network already differ by ~1 logit on this input.
GOLDEN_ATOL = {"fp32": 1e-3, "int8": 0.2}
LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "pillow", "msgspec")


def draft_card(params: Params, meta: dict, metrics: dict, manifest_bytes: bytes, ood_fit: dict) -> ModelCard:
    """Everything known before the ONNX files exist; `finish_card` adds files, golden and parity.
    `metrics`: evaluate's report (threshold, calibration); `ood_fit`: the ood stage's (artifacts/ood.json)."""
    calibration = metrics.get("calibration", {})
    return ModelCard(
        name=params.export.name,
        version=params.export.version,
        task=meta["task"],
        labels=list(meta["labels"]),
        normal_label=NORMAL_LABEL,
        threshold=float(metrics["threshold"]),
        threshold_rule=str(metrics["threshold_rule"]),
        input=input_spec(params.preprocess),
        outputs=OutputSpec(
            logits=OUTPUTS[0], cam=OUTPUTS[1], activation=activation_for(meta["task"]), features=OUTPUTS[2]
        ),
        files={},
        golden=Golden(logits={}, atol={}),
        calibration=Calibration(
            method=calibration.get("method", "none"),
            temperature=float(calibration.get("temperature", 1.0)),
            ece_test_before=calibration.get("ece_test_before"),
            ece_test_after=calibration.get("ece_test_after"),
        ),
        ood=OodSpec(
            method=ood_fit["method"],
            threshold=float(ood_fit["threshold"]),
            max_false_abstain=float(ood_fit["max_false_abstain"]),
            evaluation=ood_fit["evaluation"],
        ),
        drift=msgspec.convert(ood_fit["drift"], DriftReference),
        metrics=dict(metrics.get("test", {})),
        data_manifest_sha256=sha256_bytes(manifest_bytes),
        params_sha256=params.section_sha256(),
        versions=library_versions(),
    )


def finish_card(draft: ModelCard, model_dir: Path) -> ModelCard:
    """The draft plus the files in `model_dir`: each ONNX file (FILES) with its sha256, size and golden
    logits, and the OOD statistics file when there is one."""
    files, golden = {}, {}
    for variant, name in FILES.items():
        data = (model_dir / name).read_bytes()
        files[variant] = model_file(name, data)
        golden[variant] = golden_logits(data, draft.input.size)
    ood = draft.ood
    if ood is not None and (model_dir / OOD_STATS_FILE).is_file():
        ood = msgspec.structs.replace(
            ood, statistics=model_file(OOD_STATS_FILE, (model_dir / OOD_STATS_FILE).read_bytes())
        )
    return msgspec.structs.replace(
        draft,
        files=files,
        ood=ood,
        golden=Golden(logits=golden, atol={v: GOLDEN_ATOL[v] for v in FILES}),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def model_file(name: str, data: bytes) -> ModelFile:
    return ModelFile(path=name, sha256=sha256_bytes(data), bytes=len(data))


def write_card(card: ModelCard, model_dir: Path) -> ModelCard:
    """Write model.json and read it back the way the service will; returns the card as read."""
    (model_dir / CARD_FILE).write_bytes(card_bytes(card))
    return read_card(model_dir)


def card_bytes(card: ModelCard) -> bytes:
    return msgspec.json.format(msgspec.json.encode(card), indent=2) + b"\n"


def golden_logits(model_bytes: bytes, size: int) -> list[float]:
    # Default session options: the service's engine runs with ORT's default graph optimisations.
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    logits = session.run([OUTPUTS[0]], {INPUT: golden_input(size)})[0]
    return [float(v) for v in np.asarray(logits[0], dtype=np.float64)]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
