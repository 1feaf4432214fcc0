"""Out-of-distribution scores: how unlike the training images an input is. Higher is stranger.

Five methods, compared by the pipeline's `ood` stage, which records the winner in the card:
- mahalanobis: the distance of the model's pooled 512-d features (its last stage's channel means) to
  the nearest class mean, under a covariance the classes share (fitted on the training split, shrunk);
- multilayer: the same distance on the channel means and standard deviations of the earlier residual
  stages, each divided by its typical in-distribution value, averaged;
- knn: the cosine distance of one stage's channel statistics to its k-th nearest training image (Sun
  et al., 2022, "Out-of-distribution detection with deep nearest neighbors"): no assumption that the
  training images form one Gaussian cloud per class, which photographs exploit on real CT;
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
class Neighbours:
    """One slice of the features vector for the training images, each row scaled to unit length (N, D),
    and which nearest neighbour's distance is the score (k = 1: the nearest)."""

    start: int
    stop: int
    bank: np.ndarray
    k: int = 1


@dataclass(frozen=True)
class FeatureStats:
    blocks: tuple[Block, ...] = ()
    neighbours: Neighbours | None = None

    def to_bytes(self) -> bytes:
        arrays = {}
        if self.neighbours is not None:
            n = self.neighbours
            arrays["nn_range"] = np.array([n.start, n.stop], dtype=np.int64)
            arrays["nn_bank"], arrays["nn_k"] = n.bank.astype(np.float32), np.array(n.k, dtype=np.int64)
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
        blocks, neighbours = [], None
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            for i in range(sum(name.startswith("b") and name.endswith("_range") for name in arrays.files)):
                start, stop = (int(v) for v in arrays[f"b{i}_range"])
                means, precision = arrays[f"b{i}_means"], arrays[f"b{i}_precision"]
                if means.ndim != 2 or means.shape[1] != stop - start or precision.shape != (stop - start,) * 2:
                    raise ValueError(f"feature block {i} has inconsistent shapes")
                blocks.append(Block(start, stop, means, precision, float(arrays[f"b{i}_scale"])))
            if "nn_bank" in arrays.files:
                start, stop = (int(v) for v in arrays["nn_range"])
                bank, k = arrays["nn_bank"], int(arrays["nn_k"])
                if bank.ndim != 2 or bank.shape[1] != stop - start or not 1 <= k <= len(bank):
                    raise ValueError("the nearest-neighbour bank has inconsistent shapes")
                neighbours = Neighbours(start, stop, bank, k)
        if not blocks and neighbours is None:
            raise ValueError("the feature statistics hold no block and no neighbour bank")
        return cls(tuple(blocks), neighbours)


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


class _NeighbourDistance:
    """1 - cos(f, b) for the k-th nearest bank row b: one (N, D) x (D, B) product per batch. A feature
    vector of length zero (nothing fired) is as far as can be: distance 1 to every row."""

    def __init__(self, neighbours: Neighbours) -> None:
        self.start, self.stop, self.k = neighbours.start, neighbours.stop, neighbours.k
        self.bank_t = np.ascontiguousarray(neighbours.bank.astype(np.float32).T)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        f = np.asarray(features[:, self.start : self.stop], dtype=np.float32)
        length = np.linalg.norm(f, axis=1, keepdims=True)
        cosine = (f / np.maximum(length, np.float32(1e-12))) @ self.bank_t
        kth_largest = np.partition(cosine, cosine.shape[1] - self.k, axis=1)[:, cosine.shape[1] - self.k]
        return 1.0 - kth_largest


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
        if method == "knn":
            if stats.neighbours is None:
                raise ValueError("the knn method needs a nearest-neighbour bank in its statistics")
            self._blocks = [_NeighbourDistance(stats.neighbours)]
        elif method in FEATURE_METHODS:
            if not stats.blocks:
                raise ValueError(f"the {method} method needs feature blocks in its statistics")
            self._blocks = [_BlockDistance(b) for b in stats.blocks]
        else:
            self._blocks = []

    @property
    def needs_features(self) -> bool:
        return bool(self._blocks)

    def __call__(self, logits: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        if self._blocks:
            if features is None:
                raise ValueError(f"the {self.method} method needs the model's features")
            features = np.asarray(features).reshape(len(features), -1)
            return np.mean([distance(features) for distance in self._blocks], axis=0).astype(np.float64)
        if self.method == "energy":
            return energy_score(logits, self.rule)
        return max_softmax_score(logits, self.rule)
