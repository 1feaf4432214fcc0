"""params.yaml loaded into frozen dataclasses: a missing, unknown or mistyped key is an error at load."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from service.card import MIN_INPUT_SIZE, OOD_METHODS

PARAMS_FILE = Path("params.yaml")
# Sections that only measure a recipe: the model card's params hash leaves them out (export does not depend
# on them in dvc.yaml, so a card hashing them would go stale when they change).
MEASUREMENT_ONLY = frozenset({"cv"})


class ParamsError(ValueError):
    pass


@dataclass(frozen=True)
class Split:
    train: float
    val: float
    test: float


@dataclass(frozen=True)
class Synthetic:
    images_per_class: int
    size: int
    seed: int


@dataclass(frozen=True)
class Data:
    source: str
    task: str
    min_side: int
    near_duplicates: float  # training.near_duplicates: fingerprint distance that joins images; 0 = off
    split: Split
    seed: int
    synthetic: Synthetic


@dataclass(frozen=True)
class Window:
    width: float  # HU
    level: float  # HU


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: float
    std: float
    dicom_window: Window  # how ingest and the service turn a DICOM slice's HU into grey (service.card.DicomWindow)


@dataclass(frozen=True)
class BaseModel:
    weights: str
    seed: int


@dataclass(frozen=True)
class Tune:
    n_trials: int
    epochs: int
    seed: int
    lr: tuple[float, float]
    weight_decay: tuple[float, float]
    dropout: tuple[float, float]
    batch_size: tuple[int, ...]
    augment: tuple[float, float]


KEEP_RULES = ("best", "last")  # which epoch's weights training.fit returns


@dataclass(frozen=True)
class Recipe:
    """How training.fit trains beyond the tuned hyper-parameters (tune, train and cv all use it)."""

    warmup_epochs: int  # linear learning-rate warm-up before the cosine decay; 0 = none
    ema: float  # per-step decay of an exponential moving average of the weights, which is validated and kept; 0 = off
    label_smoothing: float  # share of each target spread over the classes; 0 = off
    keep: str = "best"  # best: the epoch of lowest validation loss (early stopping); last: the final weights
    mixup: float = 0.0  # alpha of the Beta(alpha, alpha) mixing weight of mixup; 0 = off
    gamma: float = 0.0  # window jitter: a per-image gamma of exp(U(-gamma, gamma)) on its grey range; 0 = off


@dataclass(frozen=True)
class Train:
    epochs: int
    patience: int
    seed: int
    device: str
    recipe: Recipe


@dataclass(frozen=True)
class Evaluate:
    threshold_rule: str
    calibration: str  # temperature | none
    bootstrap: int
    seed: int


@dataclass(frozen=True)
class Ood:
    method: str  # auto or one of service.card.OOD_METHODS
    max_false_abstain: float  # share of in-distribution validation images the threshold may flag
    images_per_set: int
    other_domain: str  # auto | none | a Kaggle-layout folder (for a model trained on synthetic data)
    drift_bins: int
    seed: int


@dataclass(frozen=True)
class Gates:
    preprocess_max_abs: float
    fp32_max_abs_logit: float
    int8_min_agreement: float
    int8_max_auc_delta: float
    heatmap_min_corr: float
    ood_max_rel_score: float  # |fp32 - torch| OOD score, as a share of the threshold
    int8_min_ood_agreement: float  # int8 vs fp32 abstain decisions, test split and OOD sets


@dataclass(frozen=True)
class Export:
    name: str
    version: str
    opset: int
    calibration_images: int
    gates: Gates


@dataclass(frozen=True)
class Cv:
    """Cross-validation (training/cv.py, cv/dvc.yaml): measures the recipe, never shapes the model."""

    folds: int
    repeats: int  # each repeat reshuffles the folds (seeded from seed and the repeat's index)
    seed: int
    epochs: int | None  # None: the pipeline's train.epochs


@dataclass(frozen=True)
class Params:
    data: Data
    preprocess: Preprocess
    base_model: BaseModel
    tune: Tune
    train: Train
    evaluate: Evaluate
    ood: Ood
    export: Export
    cv: Cv
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    def section_sha256(self, *sections: str) -> str:
        """Hash of the named sections (when none are named, all that shape the model), as canonical JSON."""
        chosen = {k: self.raw[k] for k in (sections or sorted(set(self.raw) - MEASUREMENT_ONLY))}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()


def load_params(path: Path = PARAMS_FILE) -> Params:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path} not found (run from the repository root)") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping of sections")
    params = _build(Params, {**raw, "raw": raw}, "params")
    _check(params)
    return params


def _build(cls, data, where: str):
    """Recursively build dataclass `cls` from `data`, refusing unknown or missing keys."""
    hints = typing.get_type_hints(cls)
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(unknown)} (expected: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{where}: missing key {name!r}")
            continue
        values[name] = _coerce(hints[name], data[name], f"{where}.{name}")
    return cls(**values)


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ParamsError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(item, v, where) for v in value)
    if hint is dict or origin is dict:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str) and type(value) is hint:
        return value
    if isinstance(hint, types.UnionType):
        arms = [arm for arm in typing.get_args(hint) if arm is not type(None)]
        if len(arms) != 1 or len(typing.get_args(hint)) != 2:
            raise ParamsError(f"{where}: unsupported type")  # pragma: no cover - only `X | None` in Params
        return None if value is None else _coerce(arms[0], value, f"{where} (or null)")
    raise ParamsError(f"{where}: expected {hint.__name__}, got {value!r}")


def _check(p: Params) -> None:
    """Value rules the types cannot express."""
    errors = []
    if p.data.task not in ("binary", "multiclass"):
        errors.append(f"data.task must be binary or multiclass, not {p.data.task!r}")
    split = p.data.split
    if min(split.train, split.val, split.test) <= 0 or abs(split.train + split.val + split.test - 1) > 1e-6:
        errors.append("data.split fractions must be positive and sum to 1")
    if p.preprocess.image_size < MIN_INPUT_SIZE or p.preprocess.std <= 0:
        errors.append(f"preprocess.image_size must be >= {MIN_INPUT_SIZE} and preprocess.std > 0")
    if not p.preprocess.dicom_window.width > 0:
        errors.append(f"preprocess.dicom_window.width must be > 0, not {p.preprocess.dicom_window.width}")
    if p.train.device not in ("auto", "cpu", "cuda"):
        errors.append(f"train.device must be auto, cpu or cuda, not {p.train.device!r}")
    rule = p.evaluate.threshold_rule
    if rule not in ("youden", "max_f1") and not rule.startswith("sensitivity:"):
        errors.append(f"evaluate.threshold_rule must be youden, max_f1 or sensitivity:<min>, not {rule!r}")
    for name in ("lr", "weight_decay", "dropout", "augment"):
        low, high = getattr(p.tune, name)
        if low > high:
            errors.append(f"tune.{name}: low {low} > high {high}")
    recipe = p.train.recipe
    if recipe.warmup_epochs < 0 or not 0.0 <= recipe.ema < 1.0 or not 0.0 <= recipe.label_smoothing < 0.5:
        errors.append(
            "train.recipe: warmup_epochs must be >= 0, ema in [0, 1) and label_smoothing in [0, 0.5), not "
            f"{recipe.warmup_epochs}, {recipe.ema}, {recipe.label_smoothing}"
        )
    if not 0.0 <= recipe.gamma <= 1.0:
        errors.append(f"train.recipe.gamma must be in [0, 1] (0 = off), not {recipe.gamma}")
    if not 0.0 <= recipe.mixup <= 10.0:
        errors.append(f"train.recipe.mixup must be in [0, 10] (0 = off), not {recipe.mixup}")
    if recipe.keep not in KEEP_RULES:
        errors.append(f"train.recipe.keep must be one of {', '.join(KEEP_RULES)}, not {recipe.keep!r}")
    if p.tune.n_trials < 1 or p.tune.epochs < 1 or p.train.epochs < 1:
        errors.append("tune.n_trials, tune.epochs and train.epochs must be >= 1")
    if not 0.0 <= p.data.near_duplicates < 1.5:
        errors.append(f"data.near_duplicates must be in [0, 1.5) (0 = off), not {p.data.near_duplicates}")
    if p.evaluate.calibration not in ("temperature", "none"):
        errors.append(f"evaluate.calibration must be temperature or none, not {p.evaluate.calibration!r}")
    if p.ood.method not in ("auto", *OOD_METHODS):
        errors.append(f"ood.method must be one of auto, {', '.join(OOD_METHODS)}, not {p.ood.method!r}")
    if not 0.0 < p.ood.max_false_abstain < 0.5 or p.ood.images_per_set < 4 or p.ood.drift_bins < 2:
        errors.append("ood.max_false_abstain must be in (0, 0.5), images_per_set >= 4, drift_bins >= 2")
    cv = p.cv
    if cv.folds < 2 or cv.repeats < 1 or (cv.epochs is not None and cv.epochs < 1):
        errors.append(
            f"cv.folds must be >= 2, cv.repeats >= 1 and cv.epochs null or >= 1, not "
            f"{cv.folds}, {cv.repeats}, {cv.epochs}"
        )
    if errors:
        raise ParamsError("; ".join(errors))
