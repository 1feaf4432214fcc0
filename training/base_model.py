"""DVC stage `base_model`: the ResNet-18 with the task's head, initialised from none | imagenet | a path."""

from __future__ import annotations

import sys

import torch

from service.card import labels_for
from training.artifacts import BASE_MODEL
from training.model import WeightsUnavailable, build_model, load_body_weights, save_checkpoint
from training.params import load_params
from training.tracking import stage_run


def main() -> None:
    params = load_params()
    labels = labels_for(params.data.task)
    torch.manual_seed(params.base_model.seed)
    model = build_model(params.data.task, labels)
    try:
        used = load_body_weights(model, params.base_model.weights)
    except WeightsUnavailable as exc:
        sys.exit(f"base_model: {exc}")
    save_checkpoint(model, BASE_MODEL, labels, params.data.task, {"weights": used})
    with stage_run("base_model", {"base_model": params.raw["base_model"], "task": params.data.task}) as mlflow:
        mlflow.log_params({"weights_used": used, "outputs": model.head.bias.numel()})
    print(f"base_model: ResNet-18, {len(labels)} labels, body weights: {used} -> {BASE_MODEL}")


if __name__ == "__main__":
    main()
