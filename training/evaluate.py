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


def chosen_rule(unscored: DecisionRule, logits_val, y_val, rules: Evaluate) -> DecisionRule:
    """The decision rule as evaluate ships it: the temperature (rules.calibration; 1 for "none"), then the
    threshold on the calibrated P(not normal) (rules.threshold_rule), both fitted on validation only."""
    temperature = fit_temperature(unscored, logits_val, y_val) if rules.calibration == "temperature" else 1.0
    calibrated = dataclasses.replace(unscored, temperature=temperature)
    positive = y_val != unscored.normal_index
    threshold = choose_threshold(positive, calibrated.cancer_probability(logits_val), rules.threshold_rule)
    return dataclasses.replace(calibrated, threshold=threshold)


def calibration_report(unscored: DecisionRule, rule: DecisionRule, logits_val, y_val, logits_test, y_test, method):
    """The temperature and the ECE before and after it, on validation and on test."""
    normal = unscored.normal_index

    def ece(which: DecisionRule, logits, y) -> float:
        return expected_calibration_error(y != normal, which.cancer_probability(logits))

    return {
        "method": method,
        "temperature": rule.temperature,
        "ece_val_before": ece(unscored, logits_val, y_val),
        "ece_val_after": ece(rule, logits_val, y_val),
        "ece_test_before": ece(unscored, logits_test, y_test),
        "ece_test_after": ece(rule, logits_test, y_test),
    }


def held_out_metrics(targets, scores, thresholds, decided, rule: DecisionRule, rules: Evaluate, **options) -> dict:
    """Metrics of held-out images with 95% bootstrap intervals (training.metrics.bootstrap_intervals):
    cancer vs normal at `thresholds` (one, or one per image), and for a multiclass task the accuracy over
    all labels (`decided`). options: `ece=True` adds the calibration error of `scores` on the same
    resamples; `clusters` resamples clusters of images (see bootstrap_intervals)."""
    positive = targets != rule.normal_index
    with_ece = options.pop("ece", False)

    def extra(indices: np.ndarray) -> dict[str, float]:
        out = {}
        if len(rule.labels) > 2:
            out["class_accuracy"] = float((decided[indices] == targets[indices]).mean())
        if with_ece:
            out["ece"] = expected_calibration_error(positive[indices], scores[indices])
        return out

    use_extra = extra if with_ece or len(rule.labels) > 2 else None
    return bootstrap_intervals(positive, scores, thresholds, rules.bootstrap, rules.seed, use_extra, **options)


def evaluate(logits_val, y_val, logits_test, y_test, unscored: DecisionRule, rules: Evaluate) -> dict:
    """`unscored`: the task's decision rule before calibration and threshold are chosen (on validation)."""
    rule = chosen_rule(unscored, logits_val, y_val, rules)
    calibration = calibration_report(unscored, rule, logits_val, y_val, logits_test, y_test, rules.calibration)
    decided = rule.decide(logits_test)
    test = held_out_metrics(y_test, rule.cancer_probability(logits_test), rule.threshold, decided, rule, rules)
    labels = list(rule.labels)
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (y_test, decided), 1)
    return {
        "threshold": rule.threshold,
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
