"""DVC stage `evaluate`: threshold chosen on validation, metrics with 95% bootstrap intervals on test."""

from __future__ import annotations

import numpy as np

from service.inference.decision import cancer_probability
from service.inference.decision import decide as decide_labels
from training import atomic, plots
from training.artifacts import CONFUSION_JSON, CONFUSION_PNG, METRICS, MODEL, ROC_JSON, ROC_PNG
from training.data import NORMAL, input_spec, load_split
from training.fit import pick_device, predict
from training.metrics import bootstrap_intervals, choose_threshold, roc_auc, roc_curve
from training.model import load_checkpoint
from training.params import load_params
from training.tracking import configure, stage_run


def cancer_scores(logits: np.ndarray, labels: list[str]) -> np.ndarray:
    return cancer_probability(logits, labels, NORMAL)


def decide(logits: np.ndarray, labels: list[str], threshold: float) -> np.ndarray:
    return decide_labels(logits, labels, NORMAL, threshold)


def evaluate(logits_val, y_val, logits_test, y_test, labels, rule: str, rounds: int, seed: int) -> dict:
    normal = labels.index(NORMAL)
    threshold = choose_threshold(y_val != normal, cancer_scores(logits_val, labels), rule)
    scores = cancer_scores(logits_test, labels)
    decided = decide(logits_test, labels, threshold)

    def class_accuracy(indices: np.ndarray) -> dict[str, float]:
        return {"class_accuracy": float((decided[indices] == y_test[indices]).mean())}

    extra = class_accuracy if len(labels) > 2 else None
    test = bootstrap_intervals(y_test != normal, scores, threshold, rounds, seed, extra)
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (y_test, decided), 1)
    return {
        "threshold": threshold,
        "threshold_rule": rule,
        "test": test,
        "confusion": matrix.tolist(),
        "labels": labels,
        "n_test": int(len(y_test)),
        "n_val": int(len(y_val)),
    }


def write_reports(result: dict, y_test, scores, decided, labels) -> None:
    atomic.write_json(METRICS, result)
    positive = y_test != labels.index(NORMAL)
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
    result = evaluate(logits_val, y_val, logits_test, y_test, labels, rules.threshold_rule, rules.bootstrap, rules.seed)
    decided = decide(logits_test, labels, result["threshold"])
    write_reports(result, y_test, cancer_scores(logits_test, labels), decided, labels)
    mlflow = configure()
    with stage_run("evaluate", {"evaluate": params.raw["evaluate"]}):
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
