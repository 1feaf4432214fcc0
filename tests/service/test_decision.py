"""The decision rule, the same for every endpoint: P(not normal) >= threshold -> most probable cancer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.card import Golden, InputSpec, ModelCard, ModelFile, OutputSpec
from service.inference.decision import DecisionRule


def card(task: str, labels: list[str], threshold: float = 0.5) -> ModelCard:
    return ModelCard(
        name="m",
        version="1",
        task=task,
        labels=labels,
        normal_label="normal",
        threshold=threshold,  # type: ignore[arg-type]
        threshold_rule="test",
        input=InputSpec(size=64, mean=0.2, std=0.25),
        outputs=OutputSpec(logits="logits", cam="cam", activation="sigmoid" if task == "binary" else "softmax"),
        files={"fp32": ModelFile(path="m.onnx", sha256="0", bytes=1)},
        golden=Golden(logits={}, atol={}),
    )


def test_binary_rule() -> None:
    rule = DecisionRule.of(card("binary", ["adenocarcinoma", "normal"], threshold=0.3))
    decide = rule.decision
    d = decide(np.array([0.0]))
    assert d.label == "adenocarcinoma" and d.probability == 0.5 and rule.channel_for(d.label) == (0, 1.0)
    assert list(d.probabilities) == ["adenocarcinoma", "normal"]
    threshold_logit = math.log(0.3 / 0.7)
    assert decide(np.array([threshold_logit + 1e-9])).label == "adenocarcinoma"
    low = decide(np.array([threshold_logit - 1e-3]))
    assert low.label == "normal" and rule.channel_for(low.label) == (0, -1.0)
    assert decide(np.array([-1000.0])).probability == 0.0 and decide(np.array([1000.0])).probability == 1.0


def test_multiclass_rule_picks_the_most_probable_cancer() -> None:
    labels = ["adenocarcinoma", "large.cell.carcinoma", "normal", "squamous.cell.carcinoma"]
    rule = DecisionRule.of(card("multiclass", labels, threshold=0.4))
    decide = rule.decision
    # normal is the single most probable class, but P(not normal) = 0.55 >= 0.4.
    logits = np.log(np.array([0.1, 0.15, 0.45, 0.3]))
    d = decide(logits)
    assert d.probability == pytest.approx(0.55)
    assert d.label == "squamous.cell.carcinoma" and rule.channel_for(d.label) == (3, 1.0)
    assert sum(d.probabilities.values()) == pytest.approx(1.0)
    d = decide(np.log(np.array([0.1, 0.1, 0.7, 0.1])))
    assert d.label == "normal" and rule.channel_for(d.label) == (2, 1.0)


BINARY = DecisionRule("binary", ("normal", "adenocarcinoma"), "normal", 0.5)
MULTI = DecisionRule(
    "multiclass", ("normal", "adenocarcinoma", "large_cell_carcinoma", "squamous_cell_carcinoma"), "normal"
)


def test_binary_rule_is_sigmoid_and_threshold():
    logits = np.array([[-2.0], [0.0], [3.0], [-800.0], [800.0]])
    np.testing.assert_allclose(BINARY.cancer_probability(logits), [0.1192029, 0.5, 0.9525741, 0, 1], atol=1e-6)
    assert BINARY.decide(logits).tolist() == [0, 1, 1, 0, 1]


def test_binary_rule_follows_the_label_order():
    rule = DecisionRule("binary", ("adenocarcinoma", "normal"), "normal", 0.5)
    assert rule.decide(np.array([[2.0], [-2.0]])).tolist() == [0, 1]


def test_multiclass_rule_picks_the_most_probable_cancer_only_above_threshold():
    logits = np.array(
        [
            [3.0, 0.0, 0.0, 0.0],  # clearly normal
            [0.0, 0.1, 2.0, 1.0],  # cancer; large cell most probable
            [1.0, 1.0, 0.9, 0.8],  # P(not normal) ~0.71 >= 0.6: adenocarcinoma
            [2.0, 1.5, 0.0, 0.0],  # P(not normal) ~0.33 < 0.6: normal although a cancer logit is close
        ]
    )
    rule = DecisionRule(MULTI.task, MULTI.labels, MULTI.normal, 0.6)
    p = rule.cancer_probability(logits)
    assert p[1] > 0.6 and p[3] < 0.6
    assert rule.decide(logits).tolist() == [0, 2, 1, 0]


def test_the_task_not_the_logits_shape_decides_the_rule():
    # A two-label multiclass model has two logits: it must not be read as one sigmoid per column, and a
    # binary rule refuses two logits instead of guessing.
    two = DecisionRule("multiclass", ("normal", "adenocarcinoma"), "normal")
    np.testing.assert_allclose(two.cancer_probability(np.array([[0.0, np.log(3.0)]])), [0.75])
    with pytest.raises(ValueError, match=r"needs \(N, 1\) logits"):
        BINARY.cancer_probability(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"needs \(N, 4\) logits"):
        MULTI.decide(np.array([[0.0]]))
