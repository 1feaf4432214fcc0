"""A stand-in for the trained model, for the smoke run on a fresh clone where models/ is not built yet.

It is the real thing made small: a randomly initialised ChestNet saved with `save_checkpoint`, exported
and quantised by the export stage's own functions and described by a model card the service verifies,
so the smoke run walks the same code paths as the full run, on a 64x64 input instead of 128x128.

`python -m benchmarks.tinymodel OUT` writes OUT/models/{model.onnx, model.int8.onnx, model.json} and
OUT/model.pt. It runs in its own process so that the benchmark driver never imports torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import numpy as np
import torch

from export.onnx_export import OUTPUTS, export_fp32
from export.quantize import quantize_int8
from export.write_card import FILES, OOD_STATS_FILE, finish_card, library_versions, write_card
from service.card import NORMAL_LABEL, Golden, ModelCard, OodSpec, OutputSpec, labels_for
from service.inference.decision import DecisionRule
from service.trust.ood import OodScorer
from training.data import input_spec
from training.model import build_model, save_checkpoint
from training.ood import drift_reference, logits_and_features
from training.ood_fit import fit_stats
from training.params import load_params

SIZE = 64
OPSET = 18
REPO = Path(__file__).resolve().parents[1]


def build(out: Path) -> tuple[Path, Path]:
    """Write the tiny model pair under `out`; returns (model folder, checkpoint path)."""
    models, checkpoint = out / "models", out / "model.pt"
    models.mkdir(parents=True, exist_ok=True)
    labels = labels_for("binary")
    torch.manual_seed(0)
    model = build_model("binary", labels).eval()
    save_checkpoint(model, checkpoint, labels, "binary", {"benchmark_stand_in": True})
    spec = msgspec.structs.replace(input_spec(load_params(REPO / "params.yaml").preprocess), size=SIZE)
    export_fp32(model, models / FILES["fp32"], SIZE, OPSET)
    calibration = np.random.default_rng(0).normal(0.0, 1.0, (8, 1, SIZE, SIZE)).astype(np.float32)
    quantize_int8(models / FILES["fp32"], models / FILES["int8"], calibration)
    trust = _trust(model, calibration, labels, spec, models)
    write_card(finish_card(msgspec.structs.replace(_draft(labels, spec), **trust), models), models)
    return models, checkpoint


def _trust(model, images: np.ndarray, labels: list[str], spec, models: Path) -> dict:
    """An OOD gate (multilayer, as the pipeline usually picks) and drift references fitted on the
    calibration images, with the ood stage's own functions, so the trust layer's cost is measured too."""
    rule = DecisionRule("binary", tuple(labels), NORMAL_LABEL)
    logits, features = logits_and_features(model, images)
    stats = fit_stats("multilayer", features, np.zeros(len(images), dtype=np.int64), features)
    (models / OOD_STATS_FILE).write_bytes(stats.to_bytes())
    scores = OodScorer("multilayer", rule, stats)(logits, features)
    threshold = float(np.quantile(scores, 0.95, method="higher"))
    return {
        "ood": OodSpec(method="multilayer", threshold=threshold, max_false_abstain=0.05),
        "drift": drift_reference(images, spec, scores, rule.cancer_probability(logits), bins=10),
        "outputs": OutputSpec(logits=OUTPUTS[0], cam=OUTPUTS[1], activation="sigmoid", features=OUTPUTS[2]),
    }


def _draft(labels: list[str], spec) -> ModelCard:
    return ModelCard(
        name="chest-cancer-net-benchmark-stand-in",
        version="0.0.0",
        task="binary",
        labels=labels,
        normal_label=NORMAL_LABEL,
        threshold=0.5,
        threshold_rule="fixed (random weights, benchmark smoke run)",
        input=spec,
        outputs=OutputSpec(logits=OUTPUTS[0], cam=OUTPUTS[1], activation="sigmoid"),
        files={},
        golden=Golden(logits={}, atol={}),
        versions=library_versions(),
    )


if __name__ == "__main__":
    folder, weights = build(Path(sys.argv[1]))
    print(f"tiny model: {folder} and {weights}")
