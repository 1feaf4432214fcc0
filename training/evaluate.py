"""DVC stage `evaluate`: temperature calibration and the decision threshold, both chosen on validation;
metrics with 95% bootstrap intervals on test, the calibration error before and after."""

from __future__ import annotations

import dataclasses

import numpy as np

from service.inference.decision import DecisionRule
from training import atomic, plots
from training.artifacts import (
    CALIBRATION_JSON,
    CALIBRATION_PNG,
    CONFUSION_JSON,
    CONFUSION_PNG,
    METRICS,
    MODEL,
    ROC_JSON,
    ROC_PNG,
)
from training.calibration import fit_temperature
from training.data import input_spec, load_split
from training.fit import pick_device, predict, task_rule
from training.metrics import (
    bootstrap_intervals,
    choose_threshold,
    expected_calibration_error,
    reliability_rows,
    roc_auc,
    roc_curve,
)
from training.model import load_checkpoint
from training.params import Evaluate, load_params
from training.tracking import stage_run


def calibrate(unscored: DecisionRule, logits_val, y_val, logits_test, y_test, method: str) -> tuple[DecisionRule, dict]:
    """The rule with its temperature fitted on validation (1 for method "none"), and the ECE figures."""
    temperature = fit_temperature(unscored, logits_val, y_val) if method == "temperature" else 1.0
    calibrated = dataclasses.replace(unscored, temperature=temperature)
    normal = unscored.normal_index

    def ece(rule: DecisionRule, logits, y) -> float:
        return expected_calibration_error(y != normal, rule.cancer_probability(logits))

    report = {
        "method": method,
        "temperature": temperature,
        "ece_val_before": ece(unscored, logits_val, y_val),
        "ece_val_after": ece(calibrated, logits_val, y_val),
        "ece_test_before": ece(unscored, logits_test, y_test),
        "ece_test_after": ece(calibrated, logits_test, y_test),
    }
    return calibrated, report


def evaluate(logits_val, y_val, logits_test, y_test, unscored: DecisionRule, rules: Evaluate) -> dict:
    """`unscored`: the task's decision rule before calibration and threshold are chosen (on validation)."""
    calibrated, calibration = calibrate(unscored, logits_val, y_val, logits_test, y_test, rules.calibration)
    normal = unscored.normal_index
    threshold = choose_threshold(y_val != normal, calibrated.cancer_probability(logits_val), rules.threshold_rule)
    rule = dataclasses.replace(calibrated, threshold=threshold)
    scores = rule.cancer_probability(logits_test)
    decided = rule.decide(logits_test)
    labels = list(rule.labels)

    def class_accuracy(indices: np.ndarray) -> dict[str, float]:
        return {"class_accuracy": float((decided[indices] == y_test[indices]).mean())}

    extra = class_accuracy if len(labels) > 2 else None
    test = bootstrap_intervals(y_test != normal, scores, threshold, rules.bootstrap, rules.seed, extra)
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (y_test, decided), 1)
    return {
        "threshold": threshold,
        "threshold_rule": rules.threshold_rule,
        "calibration": calibration,
        "test": test,
        "confusion": matrix.tolist(),
        "labels": labels,
        "n_test": int(len(y_test)),
        "n_val": int(len(y_val)),
    }


def write_reports(result: dict, y_test, logits_test, unscored: DecisionRule) -> None:
    rule = dataclasses.replace(
        unscored, threshold=result["threshold"], temperature=result["calibration"]["temperature"]
    )
    labels, scores, decided = list(rule.labels), rule.cancer_probability(logits_test), rule.decide(logits_test)
    atomic.write_json(METRICS, result)
    positive = y_test != rule.normal_index
    fpr, tpr, _ = roc_curve(positive, scores)
    atomic.write_json(ROC_JSON, [{"fpr": float(f), "tpr": float(t)} for f, t in zip(fpr, tpr, strict=True)])
    atomic.write_json(
        CONFUSION_JSON, [{"actual": labels[a], "predicted": labels[p]} for a, p in zip(y_test, decided, strict=True)]
    )
    curves = {
        "uncalibrated": reliability_rows(positive, unscored.cancer_probability(logits_test)),
        "calibrated": reliability_rows(positive, scores),
    }
    atomic.write_json(CALIBRATION_JSON, [{"model": name, **row} for name, rows in curves.items() for row in rows])
    plots.roc(fpr, tpr, roc_auc(positive, scores), ROC_PNG)
    plots.confusion_matrix(np.array(result["confusion"]), labels, CONFUSION_PNG)
    plots.reliability(curves, result["calibration"], CALIBRATION_PNG)


def main() -> None:
    params = load_params()
    spec = input_spec(params.preprocess)
    model, meta = load_checkpoint(MODEL)
    device = pick_device(params.train.device)
    x_val, y_val, _ = load_split("val", spec)
    x_test, y_test, _ = load_split("test", spec)
    model.to(device)
    logits_val, logits_test = predict(model, x_val, device), predict(model, x_test, device)
    unscored = task_rule(meta)
    result = evaluate(logits_val, y_val, logits_test, y_test, unscored, params.evaluate)
    write_reports(result, y_test, logits_test, unscored)
    calibration = result["calibration"]
    with stage_run("evaluate", {"evaluate": params.raw["evaluate"]}) as mlflow:
        test_values = {f"test_{name}": value["value"] for name, value in result["test"].items()}
        calibration_values = {k: v for k, v in calibration.items() if isinstance(v, float)}
        mlflow.log_metrics(test_values | calibration_values | {"threshold": result["threshold"]})
        for path in (METRICS, ROC_PNG, CONFUSION_PNG, CALIBRATION_PNG):
            mlflow.log_artifact(str(path))
    summary = ", ".join(
        f"{name} {v['value']:.3f} [{v['ci95_low']:.3f}, {v['ci95_high']:.3f}]" for name, v in result["test"].items()
    )
    print(
        f"evaluate: temperature {calibration['temperature']:.3f} (test ECE {calibration['ece_test_before']:.3f} -> "
        f"{calibration['ece_test_after']:.3f}); threshold {result['threshold']:.3f} "
        f"({params.evaluate.threshold_rule}); test {summary}"
    )


if __name__ == "__main__":
    main()
