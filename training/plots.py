"""PNG figures for reports and MLflow (matplotlib, headless)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402

from training import atomic  # noqa: E402


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path, buffer.getvalue())


def training_curves(epochs: list[dict], path: Path) -> None:
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    steps = [row["epoch"] + 1 for row in epochs]
    loss_ax.plot(steps, [r["train_loss"] for r in epochs], label="train")
    loss_ax.plot(steps, [r["val_loss"] for r in epochs], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_ax.legend()
    metric_ax.plot(steps, [r["val_accuracy"] for r in epochs], label="val accuracy")
    metric_ax.plot(steps, [r["val_auc"] for r in epochs], label="val ROC-AUC")
    metric_ax.set(xlabel="epoch", ylim=(0, 1.02), title="Validation")
    metric_ax.legend()
    _save(fig, path)


def confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=colour)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="actual", title="Test confusion matrix")
    _save(fig, path)


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot(fpr, tpr, label=f"ROC-AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="sensitivity", title="Test ROC (cancer vs normal)")
    ax.legend(loc="lower right")
    _save(fig, path)


def reliability(curves: dict[str, list[dict]], calibration: dict, path: Path) -> None:
    """Observed cancer rate against predicted P(not normal), per probability bin, before and after."""
    fig, ax = plt.subplots(figsize=(4.4, 4))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    eces = {"uncalibrated": calibration["ece_test_before"], "calibrated": calibration["ece_test_after"]}
    for name, rows in curves.items():
        x, y = [r["predicted"] for r in rows], [r["observed"] for r in rows]
        ax.plot(x, y, marker="o", label=f"{name} (ECE {eces[name]:.3f})")
    ax.set(
        xlabel="predicted P(not normal)",
        ylabel="observed cancer rate",
        title=f"Test reliability, T = {calibration['temperature']:.2f}",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="upper left", fontsize="small")
    _save(fig, path)


def ood_scores(
    scores: dict[str, list[float]], kinds: dict[str, str], threshold: float, method: str, path: Path
) -> None:
    """Each group's OOD scores (in-distribution splits first, then every OOD set), and the threshold."""
    colours = {
        "in": "tab:green",
        "far": "tab:red",
        "modality": "tab:purple",
        "near": "tab:orange",
        "domain": "tab:blue",
    }
    names = [n for n in ("train", "val", "test") if n in scores] + [n for n in scores if n in kinds]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 4.2))
    for i, name in enumerate(names):
        values = np.asarray(scores[name])
        jitter = np.random.default_rng(i).uniform(-0.25, 0.25, len(values))
        ax.scatter(i + jitter, values, s=8, alpha=0.6, color=colours[kinds.get(name, "in")])
    ax.axhline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right")
    positive = all(min(v, default=1) > 0 for v in scores.values())
    ax.set(ylabel=f"{method} score", title=f"OOD scores ({method}); above the line: no answer")
    if positive:
        ax.set_yscale("log")
    ax.legend(loc="upper left", fontsize="small")
    _save(fig, path)


def near_duplicate_pairs(
    joined: list[tuple[int, int, float]],
    missed: list[tuple[int, int, float]],
    images: list,
    threshold: float,
    path: Path,
) -> None:
    """Pairs the near-duplicate threshold joined (the least alike first) beside the closest it kept apart,
    so a reader can judge the threshold (training.near_duplicates)."""
    rows = [(pair, "joined") for pair in joined] + [(pair, "kept apart") for pair in missed]
    if not rows:
        rows = [((0, 0, 0.0), "no pairs")]
    fig, axes = plt.subplots(len(rows), 2, figsize=(4.4, 2.2 * len(rows)), squeeze=False)
    for ((i, j, distance), verdict), (left, right) in zip(rows, axes, strict=True):
        for ax, index in ((left, i), (right, j)):
            if images and images[index] is not None:
                ax.imshow(images[index], cmap="gray", vmin=0, vmax=255)
            ax.set_axis_off()
        left.set_title(f"{verdict}: distance {distance:.3f} (threshold {threshold:g})", fontsize=8, loc="left")
    _save(fig, path)
