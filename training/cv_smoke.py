"""`make cv-smoke`: the cross-validation pipeline (`dvc repro cv/dvc.yaml`) end to end at toy size on the
synthetic source, in a throw-away copy of the project, bounded in time. Proves the stage definition, not
the model: 3 folds of 12 images per class at 32 px, 2 epochs, one repeat (about a minute on 2 CPU cores).

    python -m training.cv_smoke [--keep DIR] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = ("training", "export", "service", "cv", "dvc.yaml", "pyproject.toml", ".dvcignore")
SMOKE = {
    "data": {"synthetic": {"images_per_class": 12, "size": 64}, "min_side": 32},
    "preprocess": {"image_size": 32},
    "tune": {"n_trials": 1, "epochs": 1, "batch_size": [8]},
    "train": {"epochs": 2, "patience": 2, "device": "auto"},
    "evaluate": {"bootstrap": 50},
    "cv": {"folds": 3, "repeats": 1, "epochs": None},
}


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(base[key], value) if isinstance(value, dict) else value
    return out


def sandbox(root: Path, changes: dict = SMOKE) -> Path:
    """A copy of the project's code and DVC files under `root`, with params.yaml changed by `changes`
    and the synthetic source; DVC initialised without git."""
    root.mkdir(parents=True, exist_ok=True)
    for item in COPIED:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__", "dvc.lock"))
        else:
            shutil.copy2(source, root / item)
    params = merged(yaml.safe_load((REPO / "params.yaml").read_text()), changes)
    params["data"]["source"] = "synthetic"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def environment(root: Path) -> dict[str, str]:
    """The stages run `python -m ...`: this interpreter first on PATH, the copy's packages first on the path,
    and MLflow writing to the copy's own store."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
    }


def run(root: Path, timeout: float) -> dict:
    """`dvc repro cv/dvc.yaml` in the sandbox; returns reports/cv/metrics.json."""
    command = [sys.executable, "-m", "dvc", "repro", "cv/dvc.yaml"]
    subprocess.run(command, cwd=root, env=environment(root), check=True, timeout=timeout)
    return json.loads((root / "reports/cv/metrics.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the sandbox here and leave it (default: a temp folder)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cv-smoke-") as tmp:
        root = sandbox(args.keep or Path(tmp) / "project")
        try:
            report = run(root, args.timeout)
        except subprocess.TimeoutExpired:
            sys.exit(f"cv-smoke: no result within {args.timeout:.0f} s")
        except subprocess.CalledProcessError as exc:
            sys.exit(f"cv-smoke: `{' '.join(exc.cmd[1:])}` failed with exit status {exc.returncode}")
    pooled = report["pooled"]
    print(
        f"cv-smoke: {report['folds']} folds x {report['repeats']} repeat(s) of {report['images']} images in "
        f"{time.monotonic() - start:.0f} s; pooled accuracy {pooled['accuracy']['value']:.3f}, "
        f"AUC {pooled['roc_auc']['value']:.3f} (toy size: checks the pipeline, not the model)"
    )


if __name__ == "__main__":
    main()
