"""DVC stage `cv` (cv/dvc.yaml, outside the default `dvc repro`; `make cv`): stratified, grouped k-fold
cross-validation of the pipeline's recipe, repeated with reshuffled folds.

Every prepared image takes part (the pipeline's train, val and test splits pooled: the aim is to measure the
recipe on as many held-out images as there are, not the shipped model). Near-duplicate groups stay whole in
one fold. Each fold carves a grouped, stratified validation split out of its training part (in the
pipeline's val : train+val proportion), then trains exactly as `train` does (training.fit from the base
model with the tuned hyper-parameters) and chooses temperature and threshold as `evaluate` does
(training.evaluate.chosen_rule). The tuned hyper-parameters were chosen on the pipeline's split, which the
folds overlap: the figures are not a nested cross-validation of the search.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from training import atomic
from training.artifacts import BASE_MODEL, BEST_PARAMS, CV_FOLDS, CV_METRICS, CV_OOF
from training.cv_report import fold_row, named, oof_rows, summary, write_csv
from training.data import SPLITS, input_spec, load_split, read_manifest
from training.evaluate import chosen_rule, held_out_metrics
from training.fit import HParams, fit, pick_device, predict, task_rule
from training.folds import FoldError, carve_validation, kfold
from training.model import load_checkpoint
from training.params import Params, load_params
from training.tracking import stage_run


def load_everything(params: Params):
    """Every prepared image of every split: (x, targets, records)."""
    spec = input_spec(params.preprocess)
    loaded = [load_split(split, spec) for split in SPLITS]
    return (
        np.concatenate([x for x, _, _ in loaded]),
        np.concatenate([y for _, y, _ in loaded]),
        [r for _, _, rows in loaded for r in rows],
    )


def plan(targets: np.ndarray, groups: np.ndarray, params: Params) -> list[dict]:
    """One entry per (repeat, fold): the image indices it trains on, validates on and holds out."""
    cv, split = params.cv, params.data.split
    val_share = split.val / (split.train + split.val)
    folds = []
    for repeat in range(cv.repeats):
        fold_of = kfold(targets, groups, cv.folds, cv.seed, repeat)
        for fold in range(cv.folds):
            rest, held = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
            is_val = carve_validation(targets[rest], groups[rest], val_share, cv.seed, repeat, fold)
            folds.append(
                {"repeat": repeat + 1, "fold": fold + 1, "train": rest[~is_val], "val": rest[is_val], "test": held}
            )
    return folds


def run_fold(part: dict, x, targets, groups, params: Params, hp: HParams, device, mlflow) -> dict:
    """Train one fold as the pipeline trains, score its held-out images as evaluate scores them."""
    model, meta = load_checkpoint(BASE_MODEL)
    unscored = task_rule(meta)
    train, val, test = (part[k] for k in ("train", "val", "test"))
    model, history = fit(
        model,
        (x[train], targets[train]),
        (x[val], targets[val]),
        hp,
        params.cv.epochs or params.train.epochs,
        params.train.seed,
        device,
        unscored,
        params.train.recipe,
        patience=params.train.patience,
        on_epoch=lambda epoch, row: mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch),
    )
    rule = chosen_rule(unscored, predict(model, x[val], device), targets[val], params.evaluate)
    logits = predict(model, x[test], device)
    scores, decided = rule.cancer_probability(logits), rule.decide(logits)
    metrics = named(
        held_out_metrics(
            targets[test], scores, rule.threshold, decided, rule, params.evaluate, ece=True, clusters=groups[test]
        )
    )
    return {
        **part,
        "rule": rule,
        "history": history,
        "logits": logits,
        "scores": scores,
        "decided": decided,
        "metrics": metrics,
    }


def main() -> None:
    params = load_params()
    x, targets, rows = load_everything(params)
    groups = np.array([r.group or r.sha256 for r in rows])  # manifests before grouping: one image per group
    hp = HParams(**json.loads(BEST_PARAMS.read_text())["params"])
    if load_checkpoint(BASE_MODEL)[1]["labels"] != read_manifest()["labels"]:
        sys.exit(f"cv: {BASE_MODEL} and the prepared data have different labels (rerun the pipeline's stages)")
    device = pick_device(params.train.device)
    try:
        folds = plan(targets, groups, params)
    except FoldError as exc:
        sys.exit(f"cv: {exc}; lower cv.folds or add images")
    logged = {
        "cv": params.raw["cv"],
        "train": params.raw["train"],
        "evaluate": params.raw["evaluate"],
        "hparams": hp.as_dict(),
        "device": device.type,
    }
    done, start = [], time.monotonic()
    with stage_run("cv", logged) as mlflow:
        for i, part in enumerate(folds, 1):
            began = time.monotonic()
            name = f"cv-repeat{part['repeat']}-fold{part['fold']}"
            with stage_run(name, {k: len(part[k]) for k in ("train", "val", "test")}, nested=True) as child:
                result = run_fold(part, x, targets, groups, params, hp, device, child)
                result["seconds"] = time.monotonic() - began
                child.log_metrics(_flat(result["metrics"]) | {"best_epoch": result["history"].best_epoch})
            done.append(result)
            _progress(i, len(folds), result, time.monotonic() - start)
        report = summary(done, targets, groups, rows, params, device.type, time.monotonic() - start)
        atomic.write_json(CV_METRICS, report)
        write_csv(CV_FOLDS, [fold_row(r) for r in done])
        write_csv(CV_OOF, oof_rows(done, targets, groups, rows))
        mlflow.log_metrics(_flat(report["pooled"], "pooled_") | {"seconds": report["seconds"]})
        for path in (CV_METRICS, CV_FOLDS, CV_OOF):
            mlflow.log_artifact(str(path))
    pooled = report["pooled"]
    print(
        "cv: pooled out-of-fold "
        + ", ".join(
            f"{name} {v['value']:.3f} [{v['ci95_low']:.3f}, {v['ci95_high']:.3f}]" for name, v in pooled.items()
        )
        + f" ({report['interval']}); {CV_METRICS}, {CV_FOLDS}, {CV_OOF}"
    )


def _flat(metrics: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for name, v in metrics.items():
        out |= {
            f"{prefix}{name}": v["value"],
            f"{prefix}{name}_ci95_low": v["ci95_low"],
            f"{prefix}{name}_ci95_high": v["ci95_high"],
        }
    return {k: v for k, v in out.items() if np.isfinite(v)}  # mlflow refuses nan


def _progress(i: int, total: int, result: dict, elapsed: float) -> None:
    m = result["metrics"]
    eta = elapsed / i * (total - i)
    print(
        f"cv: fold {i}/{total} (repeat {result['repeat']}, fold {result['fold']}): {len(result['test'])} held out, "
        f"accuracy {m['accuracy']['value']:.3f}, AUC {m['roc_auc']['value']:.3f}; {result['seconds']:.0f} s, "
        f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}",
        flush=True,
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s" if minutes >= 60 else f"{minutes}m{secs:02d}s"


if __name__ == "__main__":
    main()
