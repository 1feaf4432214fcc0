"""params.yaml's strict loading: the committed file loads, and the OOD method check follows the card's
list of methods (service.card.OOD_METHODS), so a method the service can serve is never refused here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.card import OOD_METHODS
from training.params import ParamsError, load_params

REPO = Path(__file__).resolve().parents[2]


def _with_ood_method(tmp_path: Path, method: str) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ood"]["method"] = method
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("method", ["auto", *OOD_METHODS])
def test_every_servable_ood_method_is_accepted(tmp_path: Path, method: str) -> None:
    assert load_params(_with_ood_method(tmp_path, method)).ood.method == method


def test_an_unknown_ood_method_is_refused_with_the_choices(tmp_path: Path) -> None:
    choices = r"ood.method must be one of auto, mahalanobis, multilayer.*knn, not 'isolation_forest'"
    with pytest.raises(ParamsError, match=choices):
        load_params(_with_ood_method(tmp_path, "isolation_forest"))


def _with_cv(tmp_path: Path, **cv) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["cv"].update(cv)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_cv_epochs_null_means_the_pipelines_and_a_number_overrides(tmp_path: Path) -> None:
    assert load_params(_with_cv(tmp_path, epochs=None)).cv.epochs is None
    assert load_params(_with_cv(tmp_path, epochs=3)).cv.epochs == 3


@pytest.mark.parametrize(
    ("cv", "message"),
    [
        ({"folds": 1}, r"cv.folds must be >= 2, cv.repeats >= 1 and cv.epochs null or >= 1, not 1, 2, None"),
        ({"repeats": 0}, r"cv.folds must be >= 2.*not 5, 0, None"),
        ({"epochs": 0}, r"cv.folds must be >= 2.*not 5, 2, 0"),
        ({"epochs": "ten"}, r"params.cv.epochs \(or null\): expected int, got 'ten'"),
        ({"folds": 2.5}, r"params.cv.folds: expected int, got 2.5"),
        ({"fold": 5}, r"params.cv: unknown key\(s\) fold"),
    ],
)
def test_bad_cv_values_are_refused_with_what_was_given(tmp_path: Path, cv: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params(_with_cv(tmp_path, **cv))


def test_the_cards_params_hash_ignores_the_cv_section(tmp_path: Path) -> None:
    # export does not depend on cv in dvc.yaml: a hash that read it would go stale when it changed
    before = load_params(_with_cv(tmp_path, folds=5)).section_sha256()
    assert load_params(_with_cv(tmp_path, folds=10)).section_sha256() == before
    assert load_params(_with_cv(tmp_path)).section_sha256("cv") != load_params(
        _with_cv(tmp_path, folds=10)
    ).section_sha256("cv")


def _with_recipe(tmp_path: Path, **recipe) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["recipe"].update(recipe)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("keep", ["best", "last"])
def test_both_keep_rules_load(tmp_path, keep):
    assert load_params(_with_recipe(tmp_path, keep=keep)).train.recipe.keep == keep


def test_an_unknown_keep_rule_is_refused(tmp_path):
    with pytest.raises(ParamsError, match="keep must be one of best, last, not 'median'"):
        load_params(_with_recipe(tmp_path, keep="median"))


def test_mixup_defaults_to_off_and_loads_an_alpha(tmp_path):
    assert load_params().train.recipe.mixup == 0.0
    assert load_params(_with_recipe(tmp_path, mixup=0.2)).train.recipe.mixup == 0.2


@pytest.mark.parametrize("alpha", [-0.1, 11.0])
def test_a_mixup_alpha_out_of_range_is_refused(tmp_path, alpha):
    with pytest.raises(ParamsError, match=f"mixup must be in \\[0, 10\\] \\(0 = off\\), not {alpha}"):
        load_params(_with_recipe(tmp_path, mixup=alpha))


@pytest.mark.parametrize("spread", [-0.1, 1.5])
def test_a_window_jitter_out_of_range_is_refused(tmp_path, spread):
    with pytest.raises(ParamsError, match=f"gamma must be in \\[0, 1\\] \\(0 = off\\), not {spread}"):
        load_params(_with_recipe(tmp_path, gamma=spread))
