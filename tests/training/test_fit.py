"""training.fit's recipe pieces: the warm-up + cosine schedule, the weight average and label smoothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from service.inference.decision import DecisionRule  # noqa: E402
from training.fit import (  # noqa: E402
    HParams,
    WeightAverage,
    fit,
    loss_fn,
    mixed_loss,
    mixup_weight,
    predict,
    warmup_cosine,
    window_jitter,
)
from training.model import build_model  # noqa: E402
from training.params import Recipe  # noqa: E402

pytestmark = pytest.mark.train

BINARY = DecisionRule("binary", ("adenocarcinoma", "normal"), "normal")


def test_without_warmup_the_schedule_is_the_plain_cosine():
    factor = warmup_cosine(10, 0)
    assert [factor(e) for e in range(10)] == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)])


def test_warmup_rises_linearly_to_the_full_rate_then_decays():
    factor = warmup_cosine(10, 3)
    assert [factor(e) for e in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    later = [factor(e) for e in range(3, 10)]
    assert later == sorted(later, reverse=True) and later[-1] > 0


def test_warmup_longer_than_the_run_still_reaches_the_full_rate():
    factor = warmup_cosine(3, 10)  # capped at epochs - 1
    assert [factor(e) for e in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_the_weight_average_follows_early_then_lags_behind():
    torch.manual_seed(0)
    model = build_model("binary", ["adenocarcinoma", "normal"])
    average = WeightAverage(model, decay=0.99)
    weight = next(model.parameters())
    start = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    average.update(model)  # first step: decay 2/11, so the average moves 9/11 of the way
    moved = next(average.model.parameters())
    torch.testing.assert_close(moved, start + 9 / 11)
    for _ in range(1000):
        average.update(model)
    torch.testing.assert_close(next(average.model.parameters()), weight.detach(), rtol=0, atol=1e-4)
    assert next(average.model.parameters()).data_ptr() != weight.data_ptr()  # a copy, never the live weights


def test_the_weight_average_copies_batch_norm_counters():
    model = build_model("binary", ["adenocarcinoma", "normal"])
    average = WeightAverage(model, decay=0.9)
    counters = [k for k, v in model.state_dict().items() if not v.dtype.is_floating_point]
    assert counters, "a ResNet has batch-norm step counters"
    model.state_dict()[counters[0]].fill_(7)
    average.update(model)
    assert int(average.model.state_dict()[counters[0]]) == 7


def test_label_smoothing_moves_binary_targets_towards_one_half():
    targets = np.array([0, 1, 0, 1])  # adenocarcinoma, normal: balanced, so no class weight
    logits = torch.tensor([[8.0], [-8.0], [8.0], [-8.0]])  # confident and right
    plain = loss_fn(BINARY, targets, torch.device("cpu"))(logits, torch.from_numpy(targets))
    smoothed = loss_fn(BINARY, targets, torch.device("cpu"), 0.2)(logits, torch.from_numpy(targets))
    assert plain < 0.01 < smoothed  # smoothing penalises over-confidence
    best = torch.log(torch.tensor(0.9 / 0.1))  # the smoothed target 0.9 is best met at sigmoid(z) = 0.9
    at_target = loss_fn(BINARY, targets, torch.device("cpu"), 0.2)(
        torch.tensor([[best], [-best], [best], [-best]]), torch.from_numpy(targets)
    )
    assert at_target < smoothed


def _toy_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(0, 0.3, (n, 1, 32, 32)).astype(np.float32)
    x[y == 0, :, 8:24, 8:24] += 1.5  # "adenocarcinoma": a bright square
    return x, y


def test_fit_with_the_full_recipe_learns_and_returns_the_averaged_model():
    torch.manual_seed(0)
    model = build_model("binary", ["adenocarcinoma", "normal"])
    hp = HParams(lr=3e-3, weight_decay=1e-4, dropout=0.0, batch_size=8, augment=0.0)
    recipe = Recipe(warmup_epochs=1, ema=0.9, label_smoothing=0.1)
    model, history = fit(
        model, _toy_split(32, 0), _toy_split(16, 1), hp, 4, 0, torch.device("cpu"), BINARY, recipe, patience=10
    )
    assert len(history.epochs) == 4
    assert history.best_val_loss == min(row["val_loss"] for row in history.epochs)
    assert history.epochs[history.best_epoch]["val_accuracy"] == 1.0
    assert not model.training


def test_keep_last_ignores_patience_and_returns_the_final_weights():
    torch.manual_seed(0)
    model = build_model("binary", ["adenocarcinoma", "normal"])
    hp = HParams(lr=3e-2, weight_decay=1e-4, dropout=0.0, batch_size=8, augment=0.0)  # a rate that wanders
    recipe = Recipe(warmup_epochs=0, ema=0.0, label_smoothing=0.0, keep="last")
    train, val = _toy_split(32, 0), _toy_split(16, 1)
    model, history = fit(model, train, val, hp, 5, 0, torch.device("cpu"), BINARY, recipe, patience=1)
    assert len(history.epochs) == 5  # patience 1 did not stop it
    assert history.best_epoch == 4 and history.best_val_loss == history.epochs[-1]["val_loss"]
    logits = torch.from_numpy(predict(model, val[0], torch.device("cpu")))
    loss = loss_fn(BINARY, train[1], torch.device("cpu"))(logits, torch.from_numpy(val[1])).item()
    assert loss == pytest.approx(history.epochs[-1]["val_loss"], rel=1e-5)  # the last epoch's model, returned


def test_mixup_weights_are_reproducible_draws_inside_the_unit_interval():
    draws = [mixup_weight(0.2, torch.Generator().manual_seed(s)) for s in range(200)]
    again = [mixup_weight(0.2, torch.Generator().manual_seed(s)) for s in range(200)]
    assert draws == again and all(0.0 <= w <= 1.0 for w in draws)
    # Beta(0.2, 0.2) piles up near 0 and 1: most blends are mostly one image
    assert np.mean([min(w, 1 - w) < 0.1 for w in draws]) > 0.5


def test_mixed_loss_is_the_plain_loss_when_off_and_the_blend_of_both_targets_when_on():
    torch.manual_seed(0)
    model = build_model("binary", ["adenocarcinoma", "normal"]).eval()
    x, y = (torch.from_numpy(a) for a in _toy_split(8, 2))
    criterion = loss_fn(BINARY, y.numpy(), torch.device("cpu"))
    assert mixed_loss(model, x, y, criterion, 0.0, torch.Generator()).item() == criterion(model(x)[0], y).item()
    # Replay the generator to recover the draw and the partners, then recompute the blend by hand.
    weight = mixup_weight(0.4, torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    mixup_weight(0.4, replay)
    partner = torch.randperm(len(x), generator=replay)
    logits = model(weight * x + (1 - weight) * x[partner])[0]
    expected = weight * criterion(logits, y) + (1 - weight) * criterion(logits, y[partner])
    got = mixed_loss(model, x, y, criterion, 0.4, torch.Generator().manual_seed(5))
    assert 0.0 < weight < 1.0 and got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_fit_with_mixup_still_learns_the_toy_task():
    torch.manual_seed(0)
    model = build_model("binary", ["adenocarcinoma", "normal"])
    hp = HParams(lr=3e-3, weight_decay=1e-4, dropout=0.0, batch_size=8, augment=0.0)
    recipe = Recipe(warmup_epochs=0, ema=0.0, label_smoothing=0.0, mixup=0.2)
    model, history = fit(
        model, _toy_split(32, 0), _toy_split(16, 1), hp, 4, 0, torch.device("cpu"), BINARY, recipe, patience=10
    )
    assert history.epochs[history.best_epoch]["val_accuracy"] == 1.0


def test_window_jitter_bends_each_images_greys_but_keeps_its_range_and_order():
    x = torch.linspace(-1.0, 2.0, 64).view(1, 1, 8, 8).repeat(6, 1, 1, 1)
    assert torch.equal(window_jitter(x, 0.0, torch.Generator()), x)
    bent = window_jitter(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(bent.amin(dim=(1, 2, 3)), x.amin(dim=(1, 2, 3)))
    assert torch.allclose(bent.amax(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), atol=1e-6)
    flat = bent.view(6, -1)
    assert bool((flat[:, 1:] >= flat[:, :-1]).all())  # monotone: the grey order of the pixels survives
    middles = flat[:, 32]
    assert middles.max() - middles.min() > 0.1  # each image drew its own gamma
    assert torch.equal(bent, window_jitter(x, 0.5, torch.Generator().manual_seed(0)))
