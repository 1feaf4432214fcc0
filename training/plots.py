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
