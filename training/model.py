"""The one definition of the classifier: a grey-input ResNet-18 with a class-activation-map head."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from service.card import logit_count
from training import atomic


class CamHead(nn.Module):
    """Global-average-pool + linear, written as a 1x1 conv first so the heatmap is exact.

    cam = W * features (per pixel), logits = mean(cam) + b, which equals fc(avgpool(features)).
    Exporting `cam` lets the service draw heatmaps from ONNX outputs alone.
    """

    def __init__(self, in_channels: int, outputs: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(in_channels, outputs, kernel_size=1, bias=False)
        self.bias = nn.Parameter(torch.zeros(outputs))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.classifier(self.dropout(features))
        return cam.mean(dim=(2, 3)) + self.bias, cam


class ChestNet(nn.Module):
    """ResNet-18 body on a one-channel input; forward returns (logits, cam)."""

    def __init__(self, outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        body = resnet18(weights=None)
        body.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.body = nn.Sequential(*list(body.children())[:-2])  # drop avgpool and fc
        self.head = CamHead(512, outputs, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x))

    def set_dropout(self, p: float) -> None:
        self.head.dropout.p = p


# What WithFeatures exports per image, in order: each residual stage's channel means, and for the first
# three their channel standard deviations too (texture statistics: they tell a photograph or a pattern
# from a CT slice far better than the last stage does; measured in training/ood.py's report).
FEATURE_BLOCKS = (("layer1", 64, True), ("layer2", 128, True), ("layer3", 256, True), ("layer4", 512, False))


def feature_slices() -> dict[str, tuple[int, int]]:
    """Where each block's statistics lie in the features vector: name -> (start, stop)."""
    out, start = {}, 0
    for name, channels, with_std in FEATURE_BLOCKS:
        width = channels * (2 if with_std else 1)
        out[name] = (start, start + width)
        start += width
    return out


class WithFeatures(nn.Module):
    """The network as exported and scored for OOD: (logits, cam, features (N, 1408)), the features being
    the FEATURE_BLOCKS statistics; the last block is the pooled 512-d vector the head's linear map reads."""

    def __init__(self, net: ChestNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stages = dict(zip((name for name, _, _ in FEATURE_BLOCKS), list(self.net.body)[-4:], strict=True))
        stats = []
        for layer in list(self.net.body)[:-4]:
            x = layer(x)
        for name, _, with_std in FEATURE_BLOCKS:
            x = stages[name](x)
            stats.append(x.mean(dim=(2, 3)))
            if with_std:
                stats.append(x.std(dim=(2, 3)))
        logits, cam = self.net.head(x)
        return logits, cam, torch.cat(stats, dim=1)


def build_model(task: str, labels: list[str], dropout: float = 0.0) -> ChestNet:
    """The classifier for a task over these labels (its output width: service.card.logit_count)."""
    return ChestNet(logit_count(task, labels), dropout)


class WeightsUnavailable(RuntimeError):
    pass


def imagenet_body_state() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 weights mapped onto our body (conv1 summed over RGB).

    Summing the RGB filters gives exactly the response of the RGB network to a grey image
    replicated across three channels.
    """
    try:
        state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # URLError, socket errors, hash mismatch: all mean "not available here"
        raise WeightsUnavailable(
            "ImageNet ResNet-18 weights are not cached and cannot be downloaded "
            f"({type(exc).__name__}); put resnet18-f37072fd.pth in $TORCH_HOME/hub/checkpoints "
            "or set base_model.weights to none or a state-dict path"
        ) from None
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    names = [name for name, _ in resnet18().named_children()][:-2]
    index = {name: str(i) for i, name in enumerate(names)}
    return {
        f"body.{index[key.split('.')[0]]}.{key.split('.', 1)[1]}": value
        for key, value in state.items()
        if not key.startswith("fc.")
    }


def load_body_weights(model: ChestNet, source: str) -> str:
    """Initialise the body from `source` ('none' | 'imagenet' | a path); returns what was used."""
    if source == "none":
        return "none (random init)"
    if source == "imagenet":
        state = imagenet_body_state()
    else:
        path = Path(source)
        if not path.is_file():
            raise WeightsUnavailable(f"base_model.weights: no file at {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if k.startswith("body.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only the head may be missing: anything else means the weights do not belong to this body.
    if unexpected or any(not name.startswith("head.") for name in missing):
        raise WeightsUnavailable(f"weights from {source} do not fit the ResNet-18 body")
    return source


def save_checkpoint(model: ChestNet, path: Path, labels: list[str], task: str, hparams: dict) -> None:
    """The trained model as a plain state dict plus what is needed to rebuild it (weights_only-safe)."""
    payload = {"state_dict": model.state_dict(), "labels": labels, "task": task, "hparams": hparams}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic.write_bytes(path, buffer.getvalue())  # a killed run leaves the old checkpoint or none


def load_checkpoint(path: Path) -> tuple[ChestNet, dict]:
    """Rebuild the model from `save_checkpoint` output, strictly; returns (model in eval mode, metadata)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(payload["task"], payload["labels"])
    model.load_state_dict(payload["state_dict"], strict=True)
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model.eval(), meta
