"""The training loop shared by `tune`, `train` and `cv`: AdamW, warm-up then cosine schedule, class-weighted
loss (optionally label-smoothed), CT-suited augmentation, an optional moving average of the weights, early
stopping and checkpoint choice on the validation split only."""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from service.card import NORMAL_LABEL
from service.inference.decision import DecisionRule
from training.metrics import roc_auc
from training.model import ChestNet
from training.params import Recipe


@dataclass(frozen=True)
class HParams:
    lr: float
    weight_decay: float
    dropout: float
    batch_size: int
    augment: float  # 0 = none, 1 = the strongest augmentation below

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf


def task_rule(meta: dict) -> DecisionRule:
    """The decision rule of a checkpoint's task (see training.model.save_checkpoint), threshold 0.5."""
    return DecisionRule(meta["task"], tuple(meta["labels"]), NORMAL_LABEL)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def augment(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Small rotations, scale and shifts (patients lie differently), contrast/brightness (window
    settings differ) and noise (dose differs). No flips: left/right anatomy is not symmetric."""
    if strength <= 0:
        return x
    n = x.shape[0]

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1).to(x.device) * scale * strength

    angle, zoom = uniform(math.radians(10)), 1 + uniform(0.10)
    shift_x, shift_y = uniform(0.08), uniform(0.08)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin(dim=(1, 2, 3), keepdim=True)  # letterbox padding value
    x = F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
    contrast, brightness = 1 + uniform(0.15), uniform(0.15)
    noise = torch.randn(x.shape, generator=generator).to(x.device) * 0.05 * strength
    return x * contrast.view(-1, 1, 1, 1) + brightness.view(-1, 1, 1, 1) + noise


def window_jitter(x: torch.Tensor, spread: float, generator: torch.Generator) -> torch.Tensor:
    """A random gamma per image, exp(U(-spread, spread)), on its own grey range: the Kaggle slices were
    exported under different CT windows, which bend the grey scale non-linearly (a wider window lifts the
    mid-greys), not just by the linear contrast and brightness of `augment`. Each image's darkest and
    brightest values (the letterbox padding, air, bone) stay where they are. spread 0 = off."""
    if spread <= 0:
        return x
    low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    span = (high - low).clamp_min(1e-6)
    gamma = torch.exp((torch.rand(x.shape[0], generator=generator) * 2 - 1) * spread).to(x.device).view(-1, 1, 1, 1)
    return low + span * ((x - low) / span).clamp(0, 1) ** gamma


def loss_fn(rule: DecisionRule, targets: np.ndarray, device: torch.device, smoothing: float = 0.0) -> Callable:
    """Class-weighted BCE on "not normal" (a binary rule's one logit) or cross-entropy (multiclass).
    `smoothing` moves each hard target that far towards the uniform one (0 = the plain loss)."""
    counts = np.bincount(targets, minlength=len(rule.labels)).astype(np.float64)
    counts[counts == 0] = 1
    normal = rule.normal_index
    if rule.binary:
        pos_weight = torch.tensor(counts[normal] / (counts.sum() - counts[normal]), dtype=torch.float32, device=device)
        return lambda logits, y: F.binary_cross_entropy_with_logits(
            logits[:, 0], (y != normal).float() * (1 - smoothing) + smoothing / 2, pos_weight=pos_weight
        )
    weights = torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32, device=device)
    return lambda logits, y: F.cross_entropy(logits, y, weight=weights, label_smoothing=smoothing)


def warmup_cosine(epochs: int, warmup: int) -> Callable[[int], float]:
    """The learning-rate factor of each epoch: linear from 1/(warmup+1) up to 1, then a cosine to 0.
    Warm-up keeps the first steps on a from-scratch network (and fresh batch-norm statistics) small."""
    warmup = min(warmup, epochs - 1)

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))

    return factor


class WeightAverage:
    """An exponential moving average of a model's weights and batch-norm statistics, updated every step.
    Validation on a few dozen images swings from epoch to epoch with the last batches' updates; the
    average is the smoother model to validate, choose by and keep. The decay ramps up from 0.1 so that
    the average is not anchored to the random initial weights."""

    def __init__(self, model: ChestNet, decay: float) -> None:
        self.model = copy.deepcopy(model).eval()
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: ChestNet) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if average.dtype.is_floating_point:
                average.lerp_(current, 1 - decay)
            else:  # batch norm's step counter
                average.copy_(current)


@torch.no_grad()
def predict(model: ChestNet, x: np.ndarray, device: torch.device, batch: int = 64) -> np.ndarray:
    """Logits for every row of x, in eval mode."""
    model.eval()
    out = [model(torch.from_numpy(x[i : i + batch]).to(device))[0].float().cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def fit(
    model: ChestNet,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    hp: HParams,
    epochs: int,
    seed: int,
    device: torch.device,
    rule: DecisionRule,
    recipe: Recipe,
    patience: int | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> tuple[ChestNet, History]:
    """Train and return the model kept by `recipe.keep`, with the per-epoch history (whose best_epoch and
    best_val_loss are the kept epoch's). keep "best": the epoch of lowest validation loss, stopping after
    `patience` epochs without a new one; "last": every epoch runs and the final weights are kept, the
    validation loss only logged (on a few dozen validation images its minimum is partly chance, and it
    can stop training before the cosine schedule's low-rate end).
    `rule` is the task's decision rule (threshold 0.5 for the validation accuracy logged per epoch).
    With `recipe.ema` on, the weight average is what is validated, chosen and returned."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).set_dropout(hp.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(epochs, recipe.warmup_epochs))
    criterion = loss_fn(rule, train[1], device, recipe.label_smoothing)
    val_criterion = loss_fn(rule, train[1], device)  # unsmoothed: the validation loss stays a plain NLL
    average = WeightAverage(model, recipe.ema) if recipe.ema > 0 else None
    x_train, y_train = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    history, best_state = History(), None
    keep_last = recipe.keep == "last"
    for epoch in range(epochs):
        train_loss = _one_epoch(
            model, x_train, y_train, hp, criterion, optimizer, generator, device, epoch, average, recipe
        )
        schedule.step()
        judged = model if average is None else average.model
        row = {"epoch": epoch, "train_loss": train_loss, **_validate(judged, val, val_criterion, device, rule)}
        history.epochs.append(row)
        if (keep_last and epoch == epochs - 1) or (not keep_last and row["val_loss"] < history.best_val_loss):
            history.best_val_loss, history.best_epoch = row["val_loss"], epoch
            best_state = copy.deepcopy(judged.state_dict())
        if on_epoch is not None:
            on_epoch(epoch, row)  # may raise (e.g. optuna.TrialPruned)
        if not keep_last and patience is not None and epoch - history.best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    return model.eval(), history


def mixup_weight(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha), seeded from the run's generator so that a run stays reproducible."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixed_loss(model, inputs, targets, criterion, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """The batch's loss; with mixup (alpha > 0) each image is blended with a shuffled partner by one Beta
    draw and the loss is the same blend of both targets' losses (Zhang et al. 2018). On a few hundred
    slices the blend fills the space between the classes that the plain loss leaves free to overfit."""
    if alpha <= 0:
        return criterion(model(inputs)[0], targets)
    weight = mixup_weight(alpha, generator)
    partner = torch.randperm(len(inputs), generator=generator).to(inputs.device)
    logits = model(weight * inputs + (1 - weight) * inputs[partner])[0]
    return weight * criterion(logits, targets) + (1 - weight) * criterion(logits, targets[partner])


def _one_epoch(model, x, y, hp, criterion, optimizer, generator, device, epoch, average, recipe: Recipe) -> float:
    model.train()
    order = torch.randperm(len(x), generator=generator)
    batches = range(0, len(x), hp.batch_size)
    total = 0.0
    for start in tqdm(batches, desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=not sys.stderr.isatty()):
        index = order[start : start + hp.batch_size]
        if len(index) < 2:  # batch norm cannot train on one image
            continue
        inputs = window_jitter(augment(x[index].to(device), hp.augment, generator), recipe.gamma, generator)
        loss = mixed_loss(model, inputs, y[index].to(device), criterion, recipe.mixup, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update(model)
        total += loss.item() * len(index)
    return total / len(x)


def _validate(model, val, criterion, device, rule: DecisionRule) -> dict[str, float]:
    logits = predict(model, val[0], device)
    loss = criterion(torch.from_numpy(logits).to(device), torch.from_numpy(val[1]).to(device)).item()
    return {
        "val_loss": loss,
        "val_accuracy": float((rule.decide(logits) == val[1]).mean()),
        "val_auc": roc_auc(val[1] != rule.normal_index, rule.cancer_probability(logits)),
    }
