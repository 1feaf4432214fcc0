"""The engine: sha256-verified bytes, golden self-test, and refusal of anything that does not match."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.card import CardError, read_card
from service.inference.engine import Engine, SelfTestFailed


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_opens_and_self_tests(model_dir: Path, variant: str) -> None:
    engine = Engine.open(model_dir, variant, threads=1)
    assert engine.self_test() <= read_card(model_dir).golden.atol[variant]
    logits, cam, features = engine.run(np.zeros((3, 1, 64, 64), np.float32))
    assert features is None  # the plain fixture has no features output
    assert logits.shape == (3, 1) and cam.shape == (3, 1, 8, 8)
    # The CAM contract: logits == mean(cam) + bias.
    bias = logits[:, 0] - cam.mean(axis=(2, 3))[:, 0]
    assert np.allclose(bias, bias[0], atol=1e-2 if variant == "int8" else 1e-5)


def test_sha256_mismatch_is_refused(copy_model_dir: Callable[[], Path]) -> None:
    folder = copy_model_dir()
    data = bytearray((folder / "model.int8.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(CardError, match="does not match its card: sha256"):
        Engine.open(folder, "int8", 1)


def test_missing_card_or_file(copy_model_dir: Callable[[], Path], tmp_path: Path) -> None:
    with pytest.raises(CardError, match="model card not found"):
        Engine.open(tmp_path / "empty", "int8", 1)
    folder = copy_model_dir()
    (folder / "model.onnx").unlink()
    with pytest.raises(CardError, match="model file not found"):
        Engine.open(folder, "fp32", 1)


def test_corrupt_card(copy_model_dir: Callable[[], Path]) -> None:
    folder = copy_model_dir()
    (folder / "model.json").write_text("{not json")
    with pytest.raises(CardError, match="not valid JSON"):
        Engine.open(folder, "int8", 1)


def _edit_card(folder: Path, edit: Callable[[dict], None]) -> None:
    card = json.loads((folder / "model.json").read_text())
    edit(card)
    (folder / "model.json").write_text(json.dumps(card))


def test_golden_mismatch_fails_the_self_test(copy_model_dir: Callable[[], Path]) -> None:
    folder = copy_model_dir()
    _edit_card(folder, lambda c: c["golden"]["logits"].update(fp32=[c["golden"]["logits"]["fp32"][0] + 0.5]))
    with pytest.raises(SelfTestFailed, match="golden self-test failed"):
        Engine.open(folder, "fp32", 1)


def test_graph_that_does_not_fit_the_card(copy_model_dir: Callable[[], Path]) -> None:
    folder = copy_model_dir()
    _edit_card(folder, lambda c: c["input"].update(size=32))
    with pytest.raises(CardError):
        Engine.open(folder, "fp32", 1)
    folder2 = folder.parent / "again"
    folder2.mkdir()
    for p in folder.iterdir():
        (folder2 / p.name).write_bytes(p.read_bytes())
    _edit_card(folder2, lambda c: c["input"].update(size=64) or c["outputs"].update(cam="heat"))
    with pytest.raises(CardError, match="no output named heat"):
        Engine.open(folder2, "fp32", 1)


def test_bytes_that_are_not_onnx(copy_model_dir: Callable[[], Path]) -> None:
    from service.card import sha256_bytes

    folder = copy_model_dir()
    junk = b"definitely not a protobuf"
    (folder / "model.onnx").write_bytes(junk)
    _edit_card(folder, lambda c: c["files"]["fp32"].update(sha256=sha256_bytes(junk), bytes=len(junk)))
    with pytest.raises(CardError, match="ONNX Runtime cannot load the fp32 model"):
        Engine.open(folder, "fp32", 1)


def test_unknown_variant(model_dir: Path) -> None:
    with pytest.raises(CardError, match="no 'fp16' file"):
        Engine.open(model_dir, "fp16", 1)
