"""Out-of-distribution scores: how unlike the training images an input is. Higher is stranger.

Four methods, compared by the pipeline's `ood` stage, which records the winner in the card:
- mahalanobis: the distance of the model's pooled 512-d features (its last stage's channel means) to
  the nearest class mean, under a covariance the classes share (fitted on the training split, shrunk);
- multilayer: the same distance on the channel means and standard deviations of the earlier residual
  stages, each divided by its typical in-distribution value, averaged;
- energy: -T·logsumexp(logits/T), low where the classifier is confident in some class;
- max_softmax: 1 - the largest calibrated class probability.
The same functions score at export (parity) and in the service, so the threshold means the same thing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from service.card import FEATURE_OOD_METHODS, OOD_METHODS
from service.inference.decision import DecisionRule

METHODS = OOD_METHODS  # defined with the card, which records the method
FEATURE_METHODS = FEATURE_OOD_METHODS


@dataclass(frozen=True)
class Block:
    """One slice of the features vector, its class means (K, D), the shared precision (D, D), and the
    distance that counts as 1 (its typical in-distribution value)."""

    start: int
    stop: int
    means: np.ndarray
    precision: np.ndarray
    scale: float = 1.0


@dataclass(frozen=True)
class FeatureStats:
    blocks: tuple[Block, ...]

    def to_bytes(self) -> bytes:
        arrays = {}
        for i, b in enumerate(self.blocks):
            arrays[f"b{i}_range"] = np.array([b.start, b.stop], dtype=np.int64)
            # float32, as the scorer uses them (half the file; the export gate checks the scores)
            arrays[f"b{i}_means"], arrays[f"b{i}_precision"] = (
                b.means.astype(np.float32),
                b.precision.astype(np.float32),
            )
            arrays[f"b{i}_scale"] = np.array(b.scale)
        out = io.BytesIO()
        np.savez(out, **arrays)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureStats:
        blocks = []
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            for i in range(len(arrays.files) // 4):
                start, stop = (int(v) for v in arrays[f"b{i}_range"])
                means, precision = arrays[f"b{i}_means"], arrays[f"b{i}_precision"]
                if means.ndim != 2 or means.shape[1] != stop - start or precision.shape != (stop - start,) * 2:
                    raise ValueError(f"feature block {i} has inconsistent shapes")
                blocks.append(Block(start, stop, means, precision, float(arrays[f"b{i}_scale"])))
        if not blocks:
            raise ValueError("the feature statistics hold no block")
        return cls(tuple(blocks))


class _BlockDistance:
    """sqrt(min_k (f - m_k)' P (f - m_k)) for one block, expanded as f'Pf - 2 (P m_k)·f + m_k'P m_k so
    that one (D, D) product per image serves every class; float32, which the export gate checks
    against float64."""

    def __init__(self, block: Block) -> None:
        self.start, self.stop, self.scale = block.start, block.stop, block.scale
        means = block.means.astype(np.float64)
        self.precision = block.precision.astype(np.float32)
        projected = means @ block.precision
        self.projected_means = projected.astype(np.float32)
        self.mean_terms = np.einsum("kd,kd->k", projected, means).astype(np.float32)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        f = np.ascontiguousarray(features[:, self.start : self.stop], dtype=np.float32)
        quadratic = np.einsum("nd,nd->n", f @ self.precision, f)
        squared = quadratic[:, None] - 2.0 * (f @ self.projected_means.T) + self.mean_terms[None]
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0)) / np.float32(self.scale)


def energy_score(logits: np.ndarray, rule: DecisionRule) -> np.ndarray:
    """-T·logsumexp(logits/T); a binary rule's one logit z is the two-class logits (0, z)."""
    z = np.asarray(logits, dtype=np.float64) / rule.temperature
    if rule.binary:
        z = np.concatenate([np.zeros_like(z), z], axis=1)
    top = z.max(axis=1)
    return -rule.temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def max_softmax_score(logits: np.ndarray, rule: DecisionRule) -> np.ndarray:
    return 1.0 - rule.label_probabilities(logits).max(axis=1)


class OodScorer:
    """One method, ready to score batches: (logits (N, K), features (N, F) or None) -> (N,) float64."""

    def __init__(self, method: str, rule: DecisionRule, stats: FeatureStats | None = None) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown OOD method {method!r}; expected one of {', '.join(METHODS)}")
        if method in FEATURE_METHODS and stats is None:
            raise ValueError(f"the {method} method needs feature statistics")
        self.method, self.rule = method, rule
        self._blocks = [_BlockDistance(b) for b in stats.blocks] if method in FEATURE_METHODS else []

    @property
    def needs_features(self) -> bool:
        return bool(self._blocks)

    def __call__(self, logits: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        if self._blocks:
            if features is None:
                raise ValueError(f"the {self.method} method needs the model's features")
            features = np.asarray(features).reshape(len(features), -1)
            return np.mean([block(features) for block in self._blocks], axis=0).astype(np.float64)
        if self.method == "energy":
            return energy_score(logits, self.rule)
        return max_softmax_score(logits, self.rule)
