"""Temperature scaling: one scalar T fitted on the validation split so that probabilities computed from
logits / T match observed frequencies (minimum negative log-likelihood). It changes no ranking, so AUC
is untouched; the decision threshold is then chosen on the calibrated scale."""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize_scalar

from service.inference.decision import DecisionRule

# A validation split the model separates perfectly pushes T towards 0 (ever sharper is ever better on
# it); the bounds keep such a fit from promising certainty that unseen images will not earn.
BOUNDS = (0.05, 20.0)


def negative_log_likelihood(rule: DecisionRule, logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean NLL of the labels under the rule's probabilities (the loss the model was trained with)."""
    probabilities = np.clip(rule.label_probabilities(logits), 1e-12, 1.0)
    return float(-np.log(probabilities[np.arange(len(targets)), targets]).mean())


def fit_temperature(rule: DecisionRule, logits: np.ndarray, targets: np.ndarray) -> float:
    def loss(log_t: float) -> float:
        return negative_log_likelihood(dataclasses.replace(rule, temperature=float(np.exp(log_t))), logits, targets)

    result = minimize_scalar(loss, bounds=np.log(BOUNDS), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))
