"""DVC stage `evaluate`: threshold chosen on validation, metrics with 95% bootstrap intervals on test."""

from __future__ import annotations

import dataclasses

import numpy as np

from service.card import NORMAL_LABEL
from service.inference.decision import DecisionRule
from training import atomic, plots
from training.artifacts import CONFUSION_JSON, CONFUSION_PNG, METRICS, MODEL, ROC_JSON, ROC_PNG
from training.data import input_spec, load_split
from training.fit import pick_device, predict, task_rule
from training.metrics import bootstrap_intervals, choose_threshold, roc_auc, roc_curve
from training.model import load_checkpoint
from training.params import load_params
from training.tracking import stage_run


def evaluate(logits_val, y_val, logits_test, y_test, unscored: DecisionRule, threshold_rule: str, rounds, seed) -> dict:
    """`unscored`: the task's decision rule before its threshold is chosen (here, on validation)."""
    normal = unscored.normal_index
    threshold = choose_threshold(y_val != normal, unscored.cancer_probability(logits_val), threshold_rule)
    rule = dataclasses.replace(unscored, threshold=threshold)
    scores = rule.cancer_probability(logits_test)
    decided = rule.decide(logits_test)
    labels = list(rule.labels)

    def class_accuracy(indices: np.ndarray) -> dict[str, float]:
        return {"class_accuracy": float((decided[indices] == y_test[indices]).mean())}

    extra = class_accuracy if len(labels) > 2 else None
    test = bootstrap_intervals(y_test != normal, scores, threshold, rounds, seed, extra)
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (y_test, decided), 1)
    return {
        "threshold": threshold,
        "threshold_rule": threshold_rule,
        "test": test,
        "confusion": matrix.tolist(),
        "labels": labels,
        "n_test": int(len(y_test)),
        "n_val": int(len(y_val)),
    }


def write_reports(result: dict, y_test, scores, decided, labels) -> None:
    atomic.write_json(METRICS, result)
    positive = y_test != labels.index(NORMAL_LABEL)
    fpr, tpr, _ = roc_curve(positive, scores)
    atomic.write_json(ROC_JSON, [{"fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr, strict=True)])
    atomic.write_json(
        CONFUSION_JSON, [{"actual": labels[a], "predicted": labels[p]} for a, p in zip(y_test, decided, strict=True)]
    )
    plots.roc(fpr, tpr, roc_auc(positive, scores), ROC_PNG)
    plots.confusion_matrix(np.array(result["confusion"]), labels, CONFUSION_PNG)


def main() -> None:
    params = load_params()
    spec = input_spec(params.preprocess)
    model, meta = load_checkpoint(MODEL)
    labels = meta["labels"]
    device = pick_device(params.train.device)
    x_val, y_val, _ = load_split("val", spec)
    x_test, y_test, _ = load_split("test", spec)
    model.to(device)
    logits_val, logits_test = predict(model, x_val, device), predict(model, x_test, device)
    rules = params.evaluate
    unscored = task_rule(meta)
    result = evaluate(
        logits_val, y_val, logits_test, y_test, unscored, rules.threshold_rule, rules.bootstrap, rules.seed
    )
    rule = dataclasses.replace(unscored, threshold=result["threshold"])
    write_reports(result, y_test, rule.cancer_probability(logits_test), rule.decide(logits_test), labels)
    with stage_run("evaluate", {"evaluate": params.raw["evaluate"]}) as mlflow:
        test_values = {f"test_{name}": value["value"] for name, value in result["test"].items()}
        mlflow.log_metrics(test_values | {"threshold": result["threshold"]})
        for path in (METRICS, ROC_PNG, CONFUSION_PNG):
            mlflow.log_artifact(str(path))
    summary = ", ".join(
        f"{name} {v['value']:.3f} [{v['ci95_low']:.3f}, {v['ci95_high']:.3f}]" for name, v in result["test"].items()
    )
    print(f"evaluate: threshold {result['threshold']:.3f} ({rules.threshold_rule}); test {summary}")


if __name__ == "__main__":
    main()
