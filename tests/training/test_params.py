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
    with pytest.raises(ParamsError, match=r"ood.method must be one of auto, mahalanobis, multilayer.*'knn'"):
        load_params(_with_ood_method(tmp_path, "knn"))
