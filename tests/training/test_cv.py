"""The `cv` stage at toy size, in-process: folds grouped and complete, every image scored once per repeat,
the reports and the MLflow parent run with one child per fold; and `make cv-smoke`'s run through DVC."""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.conftest import REPO, toy_params, write_params

pytest.importorskip("torch")
pytestmark = pytest.mark.train

HPARAMS = {"lr": 0.001, "weight_decay": 0.0001, "dropout": 0.1, "batch_size": 8, "augment": 0.5}


def prepare(workdir: Path, task: str) -> list[str]:
    """ingest + base_model at toy size, tuned hyper-parameters written directly (tune is tested elsewhere);
    three images joined into one near-duplicate group. Returns the grouped images' hashes."""
    params = toy_params(task=task)
    params["data"]["synthetic"]["images_per_class"] = 9
    params["cv"].update(folds=3, repeats=2, epochs=1)
    write_params(workdir, params)
    for stage in ("training.ingest", "training.base_model"):
        importlib.import_module(stage).main()
    (workdir / "artifacts/best_params.json").write_text(json.dumps({"params": HPARAMS}))
    manifest_path = workdir / "data/prepared/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    joined = [r for r in manifest["records"] if r["label"] == "normal"][:3]
    for record in joined:
        record["group"] = joined[0]["sha256"]
    manifest_path.write_text(json.dumps(manifest))
    return [r["sha256"] for r in joined]


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_cv_stage_scores_every_image_once_per_repeat_with_groups_kept_whole(workdir, task, capsys):
    joined = prepare(workdir, task)
    importlib.import_module("training.cv").main()
    images = len(json.loads((workdir / "data/prepared/manifest.json").read_text())["records"])
    oof = read_csv(workdir / "reports/cv/oof.csv")
    assert len(oof) == 2 * images
    for repeat in ("1", "2"):
        mine = [row for row in oof if row["repeat"] == repeat]
        assert len({row["sha256"] for row in mine}) == images
        assert len({row["fold"] for row in mine if row["sha256"] in joined}) == 1
    folds = read_csv(workdir / "reports/cv/folds.csv")
    assert [(f["repeat"], f["fold"]) for f in folds] == [(r, f) for r in "12" for f in "123"]
    assert all(int(f["n_val"]) >= 2 and int(f["epochs_run"]) == 1 for f in folds)
    metrics = json.loads((workdir / "reports/cv/metrics.json").read_text())
    wanted = {"accuracy", "sensitivity", "specificity", "roc_auc", "ece"} | (
        {"class_accuracy"} if task != "binary" else set()
    )
    assert wanted <= set(metrics["pooled"]) and set(metrics["per_repeat"]) == {"1", "2"}
    for name in wanted:
        value = metrics["pooled"][name]
        assert 0 <= value["ci95_low"] <= value["ci95_high"] <= 1, name
    assert (metrics["images"], metrics["folds"], metrics["repeats"], metrics["groups"]) == (images, 3, 2, images - 2)
    out = capsys.readouterr().out
    assert "cv: fold 6/6 (repeat 2, fold 3)" in out and "ETA 0m00s" in out
    assert_mlflow_parent_with_children(6)


def assert_mlflow_parent_with_children(children: int) -> None:
    from training.tracking import configure

    mlflow = configure()
    parent = mlflow.search_runs(filter_string="tags.mlflow.runName = 'cv'", order_by=["start_time DESC"]).iloc[0]
    nested = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert len(nested) == children
    assert "metrics.pooled_accuracy" in parent.index and parent["params.cv.folds"] == "3"


def test_too_many_folds_for_the_data_stop_with_one_line(workdir):
    prepare(workdir, "binary")
    params = toy_params()
    params["data"]["synthetic"]["images_per_class"] = 9
    params["cv"]["folds"] = 12
    write_params(workdir, params)
    with pytest.raises(SystemExit, match=r"cv: 12 parts need at least 12 near-duplicate groups per class"):
        importlib.import_module("training.cv").main()


@pytest.mark.slow
def test_cv_smoke_runs_the_dvc_stage_and_the_default_repro_leaves_it_out(tmp_path):
    from training.cv_smoke import environment

    project = tmp_path / "project"
    done = subprocess.run(
        [sys.executable, "-m", "training.cv_smoke", "--keep", str(project), "--timeout", "300"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Running stage 'cv/dvc.yaml:cv'" in done.stdout and "cv: fold 3/3" in done.stdout
    assert "cv-smoke: 3 folds x 1 repeat(s) of 24 images" in done.stdout
    assert (project / "cv/dvc.lock").is_file()
    dry = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--dry"], cwd=project, env=environment(project), capture_output=True
    )
    assert b"Running stage 'train'" in dry.stdout and b"cv/dvc.yaml" not in dry.stdout, dry.stdout
    again = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "cv/dvc.yaml"],
        cwd=project,
        env=environment(project),
        capture_output=True,
    )
    assert again.returncode == 0 and b"Running stage" not in again.stdout, again.stdout


def test_make_cv_smoke_runs_the_smoke_module():
    dry = subprocess.run(["make", "-n", "cv", "cv-smoke"], cwd=REPO, capture_output=True, text=True)
    assert "dvc repro cv/dvc.yaml" in dry.stdout and "python -m training.cv_smoke" in dry.stdout
