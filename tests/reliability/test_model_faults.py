"""A broken model at start: the process exits non-zero within seconds with one clear line, and its
port never opens (it never half-serves). Complements tests/service/test_server.py (sha256 mismatch,
missing card, bad setting: exact messages)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from service.card import CARD_FILE, sha256_bytes
from tests.reliability.scenarios import start_with
from tests.service.svc_models import write_model_dir


def _card(folder: Path) -> dict:
    return json.loads((folder / CARD_FILE).read_text())


def _save_card(folder: Path, card: dict) -> None:
    (folder / CARD_FILE).write_bytes(msgspec.json.encode(card))


def _resign(folder: Path, variant: str = "int8") -> None:
    """Make the card's sha256 and size match the (broken) file again."""
    card = _card(folder)
    data = (folder / card["files"][variant]["path"]).read_bytes()
    card["files"][variant].update(sha256=sha256_bytes(data), bytes=len(data))
    _save_card(folder, card)


def missing_file(folder: Path) -> None:
    (folder / "model.int8.onnx").unlink()


def truncated_file(folder: Path) -> None:
    path = folder / "model.int8.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def truncated_and_resigned(folder: Path) -> None:
    truncated_file(folder)
    _resign(folder)


def sha256_mismatch(folder: Path) -> None:
    path = folder / "model.int8.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def wrong_input_shape(folder: Path) -> None:
    """A model built for 32x32 inputs behind a card that says 64."""
    other = write_model_dir(folder.parent / "other-size", "binary", size=32)
    shutil.copy(other / "model.int8.onnx", folder / "model.int8.onnx")
    _resign(folder)


def card_missing_field(folder: Path) -> None:
    card = _card(folder)
    del card["threshold"]
    _save_card(folder, card)


def card_not_json(folder: Path) -> None:
    (folder / CARD_FILE).write_text('{"name": "chest-cancer-net", ')


def golden_mismatch(folder: Path) -> None:
    card = _card(folder)
    card["golden"]["logits"]["int8"] = [v + 1.0 for v in card["golden"]["logits"]["int8"]]
    _save_card(folder, card)


def card_without_the_variant(folder: Path) -> None:
    card = _card(folder)
    del card["files"]["int8"]
    _save_card(folder, card)


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "model file missing": (missing_file, "model file not found"),
    "model file truncated": (truncated_file, "does not match its card: sha256"),
    "truncated file with a matching card": (truncated_and_resigned, "ONNX Runtime cannot load the int8 model"),
    "sha256 mismatch": (sha256_mismatch, "does not match its card: sha256"),
    "wrong input shape": (wrong_input_shape, "does not fit the card's (N, 1, 64, 64)"),
    "card missing a field": (card_missing_field, "missing required field `threshold`"),
    "card not JSON": (card_not_json, "is not valid JSON"),
    "golden output mismatch": (golden_mismatch, "golden self-test failed"),
    "card without the served variant": (card_without_the_variant, "model card has no 'int8' file"),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_broken_model_stops_the_process(fault: str, model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    shutil.copytree(model_dir, folder)
    breaks, message = FAULTS[fault]
    breaks(folder)
    result = start_with(folder)
    assert result["exit_code"] == 1, result
    assert result["seconds"] < 10, result
    assert len(result["stderr_lines"]) == 1, result["stderr_lines"]
    line = result["stderr_lines"][0]
    assert line.startswith("service: ") and message in line, line
    assert "Traceback" not in line
    assert not result["port_opened"], "the port opened before the model was verified"
