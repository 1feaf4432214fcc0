"""MLflow tracking for the pipeline stages: a local sqlite store unless MLFLOW_TRACKING_URI says otherwise.

No call here needs the network with the default store; `mlflow ui --backend-store-uri sqlite:///mlflow.db`
shows the runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXPERIMENT = "chest-cancer-net"
DEFAULT_STORE = Path("mlflow.db")
DEFAULT_ARTIFACTS = Path("mlartifacts")


def _mlflow():
    # Imported lazily: mlflow costs seconds to import and only the stages need it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def configure():
    """Point mlflow at the configured store and make sure the experiment exists; returns mlflow."""
    mlflow = _mlflow()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE.resolve()}"
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        location = None
        if uri.startswith("sqlite:"):
            location = DEFAULT_ARTIFACTS.resolve().as_uri()
        mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


@contextlib.contextmanager
def stage_run(stage: str, params: dict | None = None, nested: bool = False) -> Iterator[Any]:
    """An MLflow run named after the stage, tagged with the git commit when one is known; yields the
    configured mlflow module, the one way a stage logs (`with stage_run(...) as mlflow:`)."""
    mlflow = configure() if not nested else _mlflow()
    tags = {"stage": stage}
    commit = os.environ.get("GIT_COMMIT") or _git_commit()
    if commit:
        tags["git_commit"] = commit
    with mlflow.start_run(run_name=stage, nested=nested, tags=tags):
        if params:
            mlflow.log_params(flatten(params))
        yield mlflow


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _git_commit() -> str:
    head = Path(".git/HEAD")
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (Path(".git") / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return ""
