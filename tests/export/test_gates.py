"""The parity gates on hand-made arrays (numpy only, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from export.parity import Outputs, fp32_gate, heatmap_gate, int8_gate, ood_gate, preprocess_gate, report
from service.inference.decision import DecisionRule
from service.trust.ood import Block, FeatureStats, OodScorer
from training.params import Gates

GATES = Gates(
    preprocess_max_abs=1e-5,
    fp32_max_abs_logit=1e-4,
    int8_min_agreement=0.99,
    int8_max_auc_delta=0.01,
    heatmap_min_corr=0.99,
    ood_max_rel_score=1e-3,
    int8_min_ood_agreement=0.99,
)
BINARY = DecisionRule("binary", ("normal", "adenocarcinoma"), "normal", 0.5)
MULTI = DecisionRule(
    "multiclass", ("normal", "adenocarcinoma", "large_cell_carcinoma", "squamous_cell_carcinoma"), "normal", 0.6
)


def consistent(rng, n=50, k=1, spread=3.0) -> Outputs:
    """Outputs whose logits are exactly mean(cam) (bias 0), as the real head's are."""
    cam = rng.normal(0, 1, (n, k, 4, 4)) + rng.normal(0, spread, (n, k, 1, 1))
    return Outputs(cam.mean(axis=(2, 3)), cam)


def test_gates_pass_on_identical_outputs():
    rng = np.random.default_rng(0)
    ref = consistent(rng)
    same = Outputs(ref.logits.copy(), ref.cam.copy())
    targets = (ref.logits[:, 0] > 0).astype(int)
    gates = [
        preprocess_gate({"test_split": 0.0, "png_RGBA": 5e-6}, [], 50, GATES),
        fp32_gate(ref, same, BINARY, GATES),
        int8_gate(ref, same, targets, BINARY, GATES),
        heatmap_gate(ref, same, same, np.zeros(1), BINARY, GATES),
    ]
    result = report(gates, test_images=50)
    assert result["passed"] and result["failures"] == [] and result["test_images"] == 50
    assert result["gates"]["int8"]["agreement"] == 1.0 and result["gates"]["int8"]["auc_delta"] == 0.0
    assert result["gates"]["heatmap"]["min_corr"] == pytest.approx(1.0)


def test_each_gate_names_itself_and_its_numbers_when_breached():
    rng = np.random.default_rng(1)
    ref = consistent(rng, n=200)
    far = Outputs(ref.logits + rng.normal(0, 2, ref.logits.shape), rng.normal(0, 1, ref.cam.shape))
    targets = (ref.logits[:, 0] > 0).astype(int)
    lines = [
        *preprocess_gate({"test_split": 0.4}, ["a.png (truncated)"], 200, GATES).breaches,
        *fp32_gate(ref, far, BINARY, GATES).breaches,
        *int8_gate(ref, far, targets, BINARY, GATES).breaches,
        *heatmap_gate(ref, far, far, np.zeros(1), BINARY, GATES).breaches,
    ]
    text = "\n".join(lines)
    assert "preprocess: service decode+preprocess differs from the training pipeline by up to 0.4" in text
    assert "> allowed 1e-05 in test_split" in text
    assert "preprocess: 1 test image(s) could not be read or decoded on the service path, e.g. a.png" in text
    assert "fp32: max |Δlogit|" in text and "decision(s) differ from torch (allowed 0)" in text
    assert "int8: decision agreement with torch" in text and "< required 99.00%" in text
    assert "int8: |ΔAUC|" in text and "> allowed 0.01" in text
    assert "heatmap: ONNX vs torch cam correlation" in text and "< required 0.99" in text
    assert "heatmap: ONNX logits differ from mean(cam) + bias" in text


def test_heatmap_gate_looks_at_the_decided_class_channel_for_multiclass():
    rng = np.random.default_rng(2)
    ref = consistent(rng, n=2, k=4, spread=0.0)
    ref.cam[0, 1] += 5.0  # image 0: adenocarcinoma
    ref.cam[1, 3] += 5.0  # image 1: squamous cell carcinoma
    ref = Outputs(ref.cam.mean(axis=(2, 3)), ref.cam)
    other = ref.cam.copy()
    for image, channels in ((0, [0, 2, 3]), (1, [0, 1, 2])):  # the channels nobody looks at
        noise = rng.normal(0, 1, (3, 4, 4))
        other[image, channels] = (
            noise - noise.mean(axis=(1, 2), keepdims=True) + ref.logits[image, channels, None, None]
        )
    gate = heatmap_gate(ref, Outputs(ref.logits, other), Outputs(ref.logits, other), np.zeros(4), MULTI, GATES)
    assert gate.passed, gate.breaches
    other[0, 1] = 2 * ref.logits[0, 1] - ref.cam[0, 1]  # the explained map mirrored about its mean
    gate = heatmap_gate(ref, Outputs(ref.logits, other), Outputs(ref.logits, other), np.zeros(4), MULTI, GATES)
    assert not gate.passed and gate.measured["min_corr"] == pytest.approx(-1.0)
    assert gate.measured["cam_exactness_max_abs"] < 1e-9


def test_ood_gate_compares_scores_and_abstain_decisions():
    rng = np.random.default_rng(3)
    features = rng.normal(0, 1, (200, 3))
    features[100:] += 4.0  # half of them far from the class mean: abstained
    stats = FeatureStats((Block(0, 3, np.zeros((1, 3)), np.eye(3)),))
    scorer = OodScorer("mahalanobis", BINARY, stats)
    logits = np.zeros((200, 1))

    def outputs(f):
        return Outputs(logits, np.zeros((200, 1, 1, 1)), f)

    same = ood_gate(outputs(features), outputs(features + 1e-7), outputs(features + 0.01), scorer, 4.0, GATES)
    assert same.passed, same.breaches
    assert same.measured["images"] == 200 and same.measured["abstain_agreement_int8"] >= 0.99
    drifted = ood_gate(outputs(features), outputs(features * 1.01), outputs(features[::-1]), scorer, 4.0, GATES)
    assert not drifted.passed
    text = " ".join(drifted.breaches)
    assert "ood: fp32 OOD scores differ from torch by up to" in text and "> allowed 0.001" in text
    assert "ood: int8 abstain decisions agree with fp32 on" in text and "< required 99.00%" in text
