"""MLflow for the export stage: the parity report as metrics and artifact, the model in the registry."""

from __future__ import annotations

import math
from pathlib import Path

from service.card import ModelCard
from training.params import Params
from training.tracking import flatten, stage_run


def record(params: Params, parity: dict, parity_path: Path, model_dir: Path | None, card: ModelCard | None) -> None:
    """Log this export run; register the model (ONNX files, card, metrics) only when it passed."""
    with stage_run("export", {"export": params.raw["export"]}) as mlflow:
        mlflow.log_metrics(numeric(flatten(parity["gates"], "parity.")))
        mlflow.log_artifact(str(parity_path))
        mlflow.set_tag("parity_passed", str(parity["passed"]).lower())
        if model_dir is None or card is None:
            return
        mlflow.log_metrics(numeric(flatten(card.metrics, "test.")))
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        register(mlflow, mlflow.active_run(), card)


def numeric(flat: dict[str, object]) -> dict[str, float]:
    """The finite numbers of a flattened report (MLflow metrics are numbers only)."""
    return {
        key: float(value)
        for key, value in flat.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def register(mlflow, run, card: ModelCard) -> None:
    """A new version of the registered model, pointing at this run's `model/` artifacts.

    `mlflow.register_model` wants an MLmodel flavour directory; our contract is the card, so the
    version is created from the artifact folder directly.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(card.name)
    except MlflowException:
        client.create_registered_model(card.name, description="Chest CT classifier: ONNX fp32 + INT8 with model card")
    tags = {
        "card_version": card.version,
        "threshold": f"{card.threshold:.6g}",
        **{f"sha256.{variant}": file.sha256 for variant, file in card.files.items()},
        **{f"metric.{k}": str(v) for k, v in flatten(card.metrics).items()},
    }
    client.create_model_version(
        card.name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags, await_creation_for=0
    )
