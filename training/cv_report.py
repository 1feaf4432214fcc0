"""What the `cv` stage writes: the pooled and per-repeat figures (reports/cv/metrics.json), one row per fold
(folds.csv) and one row per out-of-fold prediction (oof.csv, for later use such as OOD thresholds)."""

from __future__ import annotations

import csv
import io

import numpy as np

from training import atomic
from training.evaluate import held_out_metrics
from training.params import Params


def named(metrics: dict) -> dict:
    """The cross-validation report says sensitivity where binary_metrics says recall (the same number)."""
    return {("sensitivity" if name == "recall" else name): value for name, value in metrics.items()}


def pooled(results: list[dict], targets: np.ndarray, groups: np.ndarray, params: Params) -> dict:
    """Metrics over every out-of-fold prediction in `results`, each at its own fold's threshold; the
    bootstrap resamples near-duplicate groups, so an image scored in several repeats moves as one."""
    index = np.concatenate([r["test"] for r in results])
    thresholds = np.concatenate([np.full(len(r["test"]), r["rule"].threshold) for r in results])
    scores = np.concatenate([r["scores"] for r in results])
    decided = np.concatenate([r["decided"] for r in results])
    rule = results[0]["rule"]  # labels and normal index: the same in every fold
    metrics = held_out_metrics(
        targets[index], scores, thresholds, decided, rule, params.evaluate, ece=True, clusters=groups[index]
    )
    return named(metrics)


def summary(results, targets, groups, records, params: Params, device: str, seconds: float) -> dict:
    """reports/cv/metrics.json."""
    repeats = sorted({r["repeat"] for r in results})
    names = list(results[0]["metrics"])
    spread = {}
    for name in names:
        values = np.array([r["metrics"][name]["value"] for r in results], dtype=np.float64)
        spread[name] = {
            "mean": float(np.nanmean(values)),
            "sd": float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(np.nanmin(values)),
            "max": float(np.nanmax(values)),
        }
    return {
        "task": params.data.task,
        "labels": list(results[0]["rule"].labels),
        "images": len(records),
        "groups": len(set(groups.tolist())),
        "folds": params.cv.folds,
        "repeats": params.cv.repeats,
        "epochs": params.cv.epochs or params.train.epochs,
        "device": device,
        "interval": (
            f"95% percentile bootstrap, {params.evaluate.bootstrap} resamples of near-duplicate groups (stratified "
            "cancer vs normal); pooled over repeats, an image's predictions from every repeat move together"
        ),
        "pooled": pooled(results, targets, groups, params),
        "per_repeat": {
            str(k): pooled([r for r in results if r["repeat"] == k], targets, groups, params) for k in repeats
        },
        "across_folds": spread,
        "seconds": seconds,
        "seconds_per_fold": float(np.mean([r["seconds"] for r in results])),
    }


def fold_row(result: dict) -> dict:
    history, rule = result["history"], result["rule"]
    row = {
        "repeat": result["repeat"],
        "fold": result["fold"],
        "n_train": len(result["train"]),
        "n_val": len(result["val"]),
        "n_test": len(result["test"]),
        "epochs_run": len(history.epochs),
        "best_epoch": history.best_epoch + 1,
        "seconds": round(result["seconds"], 1),
        "temperature": rule.temperature,
        "threshold": rule.threshold,
    }
    for name, v in result["metrics"].items():
        row |= {name: v["value"], f"{name}_ci95_low": v["ci95_low"], f"{name}_ci95_high": v["ci95_high"]}
    return row


def oof_rows(results: list[dict], targets, groups, records) -> list[dict]:
    """One row per held-out image per repeat: who it is, its fold's rule, its logits and the decision."""
    rows = []
    for r in results:
        rule = r["rule"]
        for j, i in enumerate(r["test"]):
            record = records[i]
            rows.append(
                {
                    "repeat": r["repeat"],
                    "fold": r["fold"],
                    "sha256": record.sha256,
                    "group": groups[i],
                    "split": record.split,  # the pipeline's split of the image (cv pools all three)
                    "label": rule.labels[targets[i]],
                    "predicted": rule.labels[r["decided"][j]],
                    "p_not_normal": float(r["scores"][j]),
                    "threshold": rule.threshold,
                    "temperature": rule.temperature,
                    **{f"logit_{k}": float(v) for k, v in enumerate(r["logits"][j])},
                }
            )
    return rows


def write_csv(path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_bytes(path, buffer.getvalue().encode())
