"""DVC stage `train`: the tuned hyper-parameters, full epochs, early stopping on validation loss."""

from __future__ import annotations

import json

from training import atomic
from training.artifacts import BASE_MODEL, BEST_PARAMS, CURVES, CURVES_PNG, MODEL
from training.data import input_spec, load_split
from training.fit import HParams, fit, pick_device, task_rule
from training.model import load_checkpoint, save_checkpoint
from training.params import load_params
from training.plots import training_curves
from training.tracking import stage_run


def main() -> None:
    params = load_params()
    spec = input_spec(params.preprocess)
    hp = HParams(**json.loads(BEST_PARAMS.read_text())["params"])
    train, val = load_split("train", spec)[:2], load_split("val", spec)[:2]
    device = pick_device(params.train.device)
    model, meta = load_checkpoint(BASE_MODEL)
    with stage_run("train", {"train": params.raw["train"], "hparams": hp.as_dict()}) as mlflow:
        model, history = fit(
            model,
            train,
            val,
            hp,
            params.train.epochs,
            params.train.seed,
            device,
            task_rule(meta),
            params.train.recipe,
            patience=params.train.patience,
            on_epoch=lambda epoch, row: mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch),
        )
        save_checkpoint(
            model.cpu(),
            MODEL,
            meta["labels"],
            meta["task"],
            {**hp.as_dict(), "best_epoch": history.best_epoch, "device": device.type},
        )
        atomic.write_json(CURVES, history.epochs)
        training_curves(history.epochs, CURVES_PNG)
        mlflow.log_metrics({"best_epoch": history.best_epoch, "best_val_loss": history.best_val_loss})
        mlflow.log_artifact(str(CURVES_PNG))
    print(f"train: best epoch {history.best_epoch + 1}/{len(history.epochs)}, val loss {history.best_val_loss:.4f}")


if __name__ == "__main__":
    main()
