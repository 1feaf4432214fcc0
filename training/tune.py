"""DVC stage `tune`: Optuna TPE search (seeded) with median pruning on per-epoch validation loss.

The study lives in a local sqlite file named after a hash of everything that shapes it, so an
interrupted `dvc repro` resumes the same study and a changed configuration starts a fresh one.
"""

from __future__ import annotations

import hashlib
import json
import logging

import optuna

from training import atomic
from training.artifacts import BASE_MODEL, BEST_PARAMS, PREPARED_DIR, STUDY_DB
from training.data import MANIFEST, input_spec, load_split
from training.fit import HParams, fit, pick_device, task_rule
from training.model import load_checkpoint
from training.params import Tune, load_params
from training.tracking import stage_run


def suggest(trial: optuna.Trial, space: Tune) -> HParams:
    return HParams(
        lr=trial.suggest_float("lr", *space.lr, log=True),
        weight_decay=trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        dropout=trial.suggest_float("dropout", *space.dropout),
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_size)),
        augment=trial.suggest_float("augment", *space.augment),
    )


def study_name(params) -> str:
    """Same search, data, start point and recipe -> same study; n_trials is left out so raising it extends."""
    search = {k: v for k, v in params.raw["tune"].items() if k != "n_trials"}
    shaping = json.dumps([search, params.raw["preprocess"], params.raw["train"]["recipe"]], sort_keys=True).encode()
    data = (PREPARED_DIR / MANIFEST).read_bytes()
    return "tune-" + hashlib.sha256(shaping + data + BASE_MODEL.read_bytes()).hexdigest()[:16]


def main() -> None:
    params = load_params()
    space, spec = params.tune, input_spec(params.preprocess)
    train, val = load_split("train", spec)[:2], load_split("val", spec)[:2]
    device = pick_device(params.train.device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name(params),
        storage=f"sqlite:///{STUDY_DB}",
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=space.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    done = sum(t.state.is_finished() for t in study.trials)

    def objective(trial: optuna.Trial) -> float:
        hp = suggest(trial, space)
        model, meta = load_checkpoint(BASE_MODEL)
        with stage_run(f"trial-{trial.number}", hp.as_dict(), nested=True) as mlflow:

            def report(epoch: int, row: dict) -> None:
                mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                trial.report(row["val_loss"], epoch)
                if trial.should_prune():
                    mlflow.set_tag("pruned", "true")
                    raise optuna.TrialPruned()

            _, history = fit(
                model,
                train,
                val,
                hp,
                space.epochs,
                space.seed + trial.number,
                device,
                task_rule(meta),
                params.train.recipe,
                on_epoch=report,
            )
        return history.best_val_loss

    with stage_run("tune", {"tune": params.raw["tune"]}) as mlflow:
        if done < space.n_trials:
            logging.info("tune: %d of %d trials done, running the rest", done, space.n_trials)
            study.optimize(objective, n_trials=space.n_trials - done)
        best = study.best_trial
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metric("best_val_loss", best.value)
    atomic.write_json(
        BEST_PARAMS,
        {
            "params": best.params,
            "val_loss": best.value,
            "trial": best.number,
            "study": study.study_name,
            "trials": len(study.trials),
        },
    )
    print(f"tune: best trial {best.number} val_loss {best.value:.4f} params {best.params}")


if __name__ == "__main__":
    main()
