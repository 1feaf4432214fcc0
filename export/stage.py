"""DVC stage `export`: model.pt -> models/{model.onnx, model.int8.onnx, model.json}, behind the parity gates.

Everything is built in a staging folder; models/ is replaced only after every gate passed and the card
read back cleanly, so a model that fails parity never gets a card. reports/parity.json is written
either way, so a failure shows what was measured.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from export.onnx_export import INPUT, OUTPUTS, ExportError, export_fp32
from export.parity import Outputs, fp32_gate, heatmap_gate, int8_gate, ood_gate, preprocess_gate, report
from export.preprocess_check import VARIANT_IMAGES, split_differences, variant_differences
from export.quantize import calibration_subset, quantize_int8
from export.register import record
from export.write_card import FILES, OOD_STATS_FILE, draft_card, finish_card, write_card
from service.card import CARD_FILE, ModelCard
from service.inference.decision import DecisionRule
from service.trust.gate import OodGate, load_statistics
from training import atomic
from training.artifacts import METRICS, MODEL, MODELS_DIR, OOD_FIT, OOD_STATS, PARITY_REPORT, PREPARED_DIR
from training.data import MANIFEST, Record, input_spec, load_split
from training.model import ChestNet, WithFeatures, load_checkpoint
from training.ood import ood_sets, set_tensors
from training.params import Params, load_params

BATCH = 64


class GatesBreached(RuntimeError):
    pass


@dataclass(frozen=True)
class Inputs:
    model: ChestNet
    meta: dict
    metrics: dict
    manifest: dict
    manifest_bytes: bytes
    test_x: np.ndarray
    test_y: np.ndarray
    test_rows: list[Record]
    calibration: np.ndarray
    ood_fit: dict  # the ood stage's choice (artifacts/ood.json)
    ood_stats: bytes  # its feature statistics (empty for a method that reads only logits)
    ood_x: np.ndarray  # the OOD sets' images, preprocessed: the OOD gate checks them beside the test split


def load_inputs(params: Params) -> Inputs:
    needed = (MODEL, METRICS, PREPARED_DIR / MANIFEST, OOD_FIT, OOD_STATS)
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise ExportError(f"missing input(s) {', '.join(missing)}: run the earlier stages first (dvc repro)")
    model, meta = load_checkpoint(MODEL)
    manifest_bytes = (PREPARED_DIR / MANIFEST).read_bytes()
    manifest = json.loads(manifest_bytes)
    if manifest["labels"] != meta["labels"]:
        raise ExportError(f"{MODEL} was trained on labels {meta['labels']}, the data has {manifest['labels']}")
    spec = input_spec(params.preprocess)
    test_x, test_y, rows = load_split("test", spec, PREPARED_DIR)
    train_x, _, _ = load_split("train", spec, PREPARED_DIR)
    calibration = calibration_subset(train_x, params.export.calibration_images)
    metrics = json.loads(METRICS.read_text())
    ood_x = np.concatenate([set_tensors(s.files, spec) for s in ood_sets(params, PREPARED_DIR)])
    ood_fit, ood_stats = json.loads(OOD_FIT.read_text()), OOD_STATS.read_bytes()
    return Inputs(
        model, meta, metrics, manifest, manifest_bytes, test_x, test_y, rows, calibration, ood_fit, ood_stats, ood_x
    )


def torch_outputs(model: ChestNet, images: np.ndarray) -> Outputs:
    net = WithFeatures(model).eval()
    with torch.inference_mode():
        parts = [net(torch.from_numpy(images[i : i + BATCH])) for i in range(0, len(images), BATCH)]
    return Outputs(*(torch.cat([p[k] for p in parts]).numpy() for k in range(3)))


def onnx_outputs(path: Path, images: np.ndarray) -> Outputs:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    parts = [session.run(list(OUTPUTS), {INPUT: images[i : i + BATCH]}) for i in range(0, len(images), BATCH)]
    return Outputs(*(np.concatenate([p[k] for p in parts]) for k in range(3)))


def check_parity(inputs: Inputs, card: ModelCard, staging: Path, params: Params) -> dict:
    """Run the five gates. The service side is the card as the service reads it back from `staging`; the
    training side is what the pipeline did (params and the prepared tensors)."""
    gates = params.export.gates
    rule = DecisionRule.of(card)
    rows, x = inputs.test_rows, inputs.test_x
    worst, problems = split_differences(inputs.manifest, PREPARED_DIR, rows, x, card.input)
    greys = [_open_grey(PREPARED_DIR / row.file) for row in rows[:VARIANT_IMAGES]]
    variants = variant_differences(greys, card.input, input_spec(params.preprocess))
    every = np.concatenate([x, inputs.ood_x])  # the OOD gate also looks at the OOD sets
    reference = torch_outputs(inputs.model, every)
    fp32 = onnx_outputs(staging / FILES["fp32"], every)
    int8 = onnx_outputs(staging / FILES["int8"], every)
    n, bias = len(x), inputs.model.head.bias.detach().numpy()
    gate = OodGate.of(card, load_statistics(staging, card), "abstain")
    return report(
        [
            preprocess_gate({"test_split": worst, **variants}, problems, len(rows), gates),
            fp32_gate(reference.head(n), fp32.head(n), rule, gates),
            int8_gate(reference.head(n), int8.head(n), inputs.test_y, rule, gates),
            heatmap_gate(reference.head(n), fp32.head(n), int8.head(n), bias, rule, gates),
            ood_gate(reference, fp32, int8, gate.scorer, gate.threshold, gates),
        ],
        test_images=len(rows),
        ood_images=len(inputs.ood_x),
        calibration_images=len(inputs.calibration),
        opset=params.export.opset,
        bytes={v: (staging / name).stat().st_size for v, name in FILES.items()},
    )


def run() -> tuple[dict, ModelCard | None]:
    """The stage, run from the repository root; raises GatesBreached after writing the parity report."""
    params = load_params()
    inputs = load_inputs(params)
    draft = draft_card(params, inputs.meta, inputs.metrics, inputs.manifest_bytes, inputs.ood_fit)
    card = None
    with tempfile.TemporaryDirectory(prefix=".export-", dir=".") as tmp:
        staging = Path(tmp)
        export_fp32(inputs.model, staging / FILES["fp32"], draft.input.size, params.export.opset)
        quantize_int8(staging / FILES["fp32"], staging / FILES["int8"], inputs.calibration)
        if inputs.ood_stats:
            (staging / OOD_STATS_FILE).write_bytes(inputs.ood_stats)
        # The gates check the card as written to disk and read back, exactly what the service will use.
        served = write_card(finish_card(draft, staging), staging)
        parity = check_parity(inputs, served, staging, params)
        atomic.write_json(PARITY_REPORT, parity)
        if parity["passed"]:
            card = write_card(msgspec.structs.replace(served, parity=parity), staging)
            atomic.replace_dir(MODELS_DIR, lambda final: _move(staging, final))
    record(params, parity, PARITY_REPORT, MODELS_DIR if card else None, card)
    if card is None:
        lines = "\n  ".join(parity["failures"])
        raise GatesBreached(f"parity gates breached, no model written (see {PARITY_REPORT}):\n  {lines}")
    return parity, card


def _open_grey(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L")


def _move(staging: Path, final: Path) -> None:
    for name in (*FILES.values(), OOD_STATS_FILE, CARD_FILE):
        if (staging / name).exists():
            shutil.move(staging / name, final / name)


def summary(parity: dict, card: ModelCard) -> str:
    g = parity["gates"]
    auc = "n/a (one class)" if g["int8"]["auc_delta"] is None else f"{g['int8']['auc_delta']:.4f}"
    sizes = ", ".join(f"{f.path} {f.bytes / 1e6:.1f} MB" for f in card.files.values())
    return (
        f"export: {MODELS_DIR}/ {sizes}, {CARD_FILE}; preprocess max |Δ| {g['preprocess']['max_abs']:.2g}; "
        f"fp32 max |Δlogit| {g['fp32']['max_abs_logit']:.2g}; int8 agreement {g['int8']['agreement']:.2%}, "
        f"|ΔAUC| {auc}; heatmap min corr {g['heatmap']['min_corr']:.4f}; OOD ({card.ood.method}) fp32 max "
        f"|Δscore| {g['ood']['max_rel_score_fp32']:.2g} of the threshold, int8 abstain agreement "
        f"{g['ood']['abstain_agreement_int8']:.2%} on {g['ood']['images']} images"
    )


def main() -> int:
    try:
        parity, card = run()
    except (GatesBreached, ExportError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    print(summary(parity, card))
    return 0
