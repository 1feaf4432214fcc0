"""The parity gates: each compares a served artefact with its torch-side reference, in numpy only.

A gate returns what it measured and, when breached, one line naming the gate with the measured and
the allowed value; `report` gathers them into the JSON that DVC shows as a metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.inference.decision import DecisionRule
from service.trust.ood import OodScorer
from training.metrics import roc_auc
from training.params import Gates


@dataclass(frozen=True)
class Gate:
    name: str
    measured: dict
    breaches: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.breaches


@dataclass(frozen=True)
class Outputs:
    """One model's outputs on a set of images."""

    logits: np.ndarray  # (N, K)
    cam: np.ndarray  # (N, K, h, w)
    features: np.ndarray | None = None  # (N, F)

    def head(self, n: int) -> Outputs:
        """The outputs of the first n images."""
        return Outputs(self.logits[:n], self.cam[:n], None if self.features is None else self.features[:n])


def preprocess_gate(max_abs: dict[str, float], unreadable: list[str], images: int, gates: Gates) -> Gate:
    """`max_abs`: worst |service - training| per image group (test split, then each synthetic mode)."""
    worst = max(max_abs.values(), default=0.0)
    measured = {"max_abs": worst, "allowed": gates.preprocess_max_abs, "images": images, "groups": max_abs}
    over = [group for group, value in max_abs.items() if not value <= gates.preprocess_max_abs]
    breaches = []
    if over:
        breaches.append(
            f"preprocess: service decode+preprocess differs from the training pipeline by up to "
            f"{max(max_abs[g] for g in over):.3g} > allowed {gates.preprocess_max_abs:g} in {', '.join(over)}"
        )
    if unreadable:
        measured["unreadable"] = unreadable
        breaches.append(
            f"preprocess: {len(unreadable)} test image(s) could not be read or decoded on the service path, "
            f"e.g. {unreadable[0]}"
        )
    return Gate("preprocess", measured, breaches)


def fp32_gate(reference: Outputs, onnx: Outputs, rule: DecisionRule, gates: Gates) -> Gate:
    delta = float(np.abs(onnx.logits - reference.logits).max())
    differ = int((rule.decide(reference.logits) != rule.decide(onnx.logits)).sum())
    measured = {"max_abs_logit": delta, "allowed": gates.fp32_max_abs_logit, "decisions_differ": differ}
    breaches = []
    if not delta <= gates.fp32_max_abs_logit:
        breaches.append(
            f"fp32: max |Δlogit| {delta:.3g} > allowed {gates.fp32_max_abs_logit:g} (torch vs ONNX Runtime)"
        )
    if differ:
        breaches.append(f"fp32: {differ} of {len(reference.logits)} decision(s) differ from torch (allowed 0)")
    return Gate("fp32", measured, breaches)


def int8_gate(reference: Outputs, int8: Outputs, targets: np.ndarray, rule: DecisionRule, gates: Gates) -> Gate:
    agreement = float((rule.decide(reference.logits) == rule.decide(int8.logits)).mean())
    p_ref, p_int8 = rule.cancer_probability(reference.logits), rule.cancer_probability(int8.logits)
    positive = targets != rule.normal_index
    auc_ref, auc_int8 = roc_auc(positive, p_ref), roc_auc(positive, p_int8)
    auc_delta = None if math.isnan(auc_ref) else abs(auc_int8 - auc_ref)
    measured = {
        "agreement": agreement,
        "min_agreement": gates.int8_min_agreement,
        "auc_torch": auc_ref,
        "auc_int8": auc_int8,
        "auc_delta": auc_delta,
        "max_auc_delta": gates.int8_max_auc_delta,
        "prob_mean_abs_diff": float(np.abs(p_int8 - p_ref).mean()),
        "prob_max_abs_diff": float(np.abs(p_int8 - p_ref).max()),
        "max_abs_logit": float(np.abs(int8.logits - reference.logits).max()),
    }
    breaches = []
    if not agreement >= gates.int8_min_agreement:
        breaches.append(
            f"int8: decision agreement with torch {agreement:.2%} < required {gates.int8_min_agreement:.2%}"
        )
    if auc_delta is not None and not auc_delta <= gates.int8_max_auc_delta:
        breaches.append(
            f"int8: |ΔAUC| {auc_delta:.4f} > allowed {gates.int8_max_auc_delta:g} "
            f"(torch {auc_ref:.4f}, int8 {auc_int8:.4f})"
        )
    return Gate("int8", measured, breaches)


def heatmap_gate(
    reference: Outputs, onnx: Outputs, int8: Outputs, bias: np.ndarray, rule: DecisionRule, gates: Gates
) -> Gate:
    """Per-image correlation of the explained cam channel, and the head's exactness in the ONNX graph."""
    channels = rule.explained_channels(rule.decide(reference.logits))
    corr = _correlations(reference.cam, onnx.cam, channels)
    corr_int8 = _correlations(reference.cam, int8.cam, channels)
    # The heatmap is exact only while logits == mean(cam) + bias holds in the exported graph.
    residual = float(np.abs(onnx.logits - onnx.cam.mean(axis=(2, 3)) - bias).max())
    measured = {
        "min_corr": float(corr.min()),
        "mean_corr": float(corr.mean()),
        "allowed": gates.heatmap_min_corr,
        "int8_min_corr": float(corr_int8.min()),
        "int8_mean_corr": float(corr_int8.mean()),
        "cam_exactness_max_abs": residual,
    }
    breaches = []
    if not corr.min() >= gates.heatmap_min_corr:
        worst = int(corr.argmin())
        breaches.append(
            f"heatmap: ONNX vs torch cam correlation {corr.min():.4f} < required {gates.heatmap_min_corr:g} "
            f"(test image {worst})"
        )
    if not residual <= gates.fp32_max_abs_logit:
        breaches.append(
            f"heatmap: ONNX logits differ from mean(cam) + bias by {residual:.3g} > {gates.fp32_max_abs_logit:g}, "
            "so its heatmaps are not exact"
        )
    return Gate("heatmap", measured, breaches)


def ood_gate(
    reference: Outputs, fp32: Outputs, int8: Outputs, scorer: OodScorer, threshold: float, gates: Gates
) -> Gate:
    """On the test split and the OOD sets: the fp32 graph's OOD scores against torch's (relative to the
    threshold), and the int8 graph's abstain decisions against the fp32 graph's."""
    s_ref, s_fp32, s_int8 = (scorer(o.logits, o.features) for o in (reference, fp32, int8))
    delta = float(np.abs(s_fp32 - s_ref).max() / abs(threshold))
    agreement = float(((s_fp32 > threshold) == (s_int8 > threshold)).mean())
    measured = {
        "images": int(len(s_ref)),
        "max_rel_score_fp32": delta,
        "allowed_rel_score": gates.ood_max_rel_score,
        "max_rel_score_int8": float(np.abs(s_int8 - s_fp32).max() / abs(threshold)),
        "abstain_agreement_int8": agreement,
        "min_agreement": gates.int8_min_ood_agreement,
        "abstained_fp32": float((s_fp32 > threshold).mean()),
    }
    breaches = []
    if not delta <= gates.ood_max_rel_score:
        breaches.append(
            f"ood: fp32 OOD scores differ from torch by up to {delta:.3g} of the threshold "
            f"> allowed {gates.ood_max_rel_score:g}"
        )
    if not agreement >= gates.int8_min_ood_agreement:
        breaches.append(
            f"ood: int8 abstain decisions agree with fp32 on {agreement:.2%} of {len(s_ref)} images "
            f"< required {gates.int8_min_ood_agreement:.2%}"
        )
    return Gate("ood", measured, breaches)


def report(gates: list[Gate], **context: object) -> dict:
    failures = [line for gate in gates for line in gate.breaches]
    return {
        "passed": not failures,
        "failures": failures,
        "gates": {gate.name: {"passed": gate.passed, **gate.measured} for gate in gates},
        **context,
    }


def _correlations(a: np.ndarray, b: np.ndarray, channels: np.ndarray) -> np.ndarray:
    rows = np.arange(len(channels))
    x = a[rows, channels].reshape(len(rows), -1).astype(np.float64)
    y = b[rows, channels].reshape(len(rows), -1).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    # A flat map has no direction: it matches only another flat map.
    flat = norm <= 1e-20
    both_flat = flat & (np.abs(x).max(axis=1) <= 1e-12) & (np.abs(y).max(axis=1) <= 1e-12)
    corr = np.where(flat, 0.0, (x * y).sum(axis=1) / np.where(flat, 1.0, norm))
    return np.where(both_flat, 1.0, corr)
