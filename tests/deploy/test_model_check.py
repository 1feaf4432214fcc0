"""deploy/check_models.py, the image build's model gate: the card must match every file it lists."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = {"fp32": ("model.onnx", b"fp32 weights" * 100), "int8": ("model.int8.onnx", b"int8 weights" * 40)}


def write_models(folder: Path) -> Path:
    folder.mkdir()
    files = {}
    for variant, (name, data) in FILES.items():
        (folder / name).write_bytes(data)
        files[variant] = {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "model.json").write_text(json.dumps({"name": "chest-cancer-net", "files": files}))
    return folder


def check(src: Path, dest: Path, variant: str = "int8") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "check_models.py"), "--variant", variant, str(src), str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_copies_the_card_and_the_one_variant(tmp_path: Path, variant: str) -> None:
    src = write_models(tmp_path / "models")
    (src / "notes.txt").write_text("not listed in the card: never copied")
    result = check(src, tmp_path / "out", variant)
    assert result.returncode == 0, result.stderr
    name, data = FILES[variant]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["model.json", name])
    assert (tmp_path / "out" / name).read_bytes() == data
    assert (tmp_path / "out" / "model.json").read_bytes() == (src / "model.json").read_bytes()


def with_ood_statistics(src: Path, data: bytes = b"npz bytes" * 10, listed: bytes | None = None) -> Path:
    """The card also lists an OOD statistics file (`listed`: the bytes its sha256 is of)."""
    (src / "ood_stats.npz").write_bytes(data)
    card = json.loads((src / "model.json").read_text())
    digest = hashlib.sha256(listed if listed is not None else data).hexdigest()
    card["ood"] = {
        "method": "multilayer",
        "statistics": {"path": "ood_stats.npz", "sha256": digest, "bytes": len(data)},
    }
    (src / "model.json").write_text(json.dumps(card))
    return src


def test_copies_the_ood_statistics_beside_the_variant(tmp_path: Path) -> None:
    src = with_ood_statistics(write_models(tmp_path / "models"))
    result = check(src, tmp_path / "out", "int8")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.int8.onnx", "model.json", "ood_stats.npz"]


def test_altered_ood_statistics_fail_the_gate(tmp_path: Path) -> None:
    src = with_ood_statistics(write_models(tmp_path / "models"), listed=b"other bytes" * 9)
    assert "ood_stats.npz does not match its card" in failure(src, tmp_path)


def failure(src: Path, tmp_path: Path, variant: str = "int8") -> str:
    result = check(src, tmp_path / "out", variant)
    assert result.returncode == 1
    assert not (tmp_path / "out").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("models check failed: ")
    return lines[0]


def test_missing_folder_or_card_says_how_to_build_the_model(tmp_path: Path) -> None:
    assert "dvc repro" in failure(tmp_path / "models", tmp_path)
    (tmp_path / "models").mkdir()
    message = failure(tmp_path / "models", tmp_path)
    assert "model.json is missing" in message and "dvc pull" in message


def test_a_file_that_does_not_match_its_card_fails(tmp_path: Path) -> None:
    src = write_models(tmp_path / "models")
    (src / "model.onnx").write_bytes(b"retrained, card not rewritten")  # the variant not shipped counts too
    assert "model.onnx does not match its card" in failure(src, tmp_path)


def test_a_missing_listed_file_fails(tmp_path: Path) -> None:
    src = write_models(tmp_path / "models")
    (src / "model.int8.onnx").unlink()
    assert "model.int8.onnx is missing" in failure(src, tmp_path)


def test_a_variant_the_card_lacks_fails(tmp_path: Path) -> None:
    src = write_models(tmp_path / "models")
    assert "lists no 'fp16' file (has: fp32, int8)" in failure(src, tmp_path, "fp16")


@pytest.mark.parametrize("path", ["../model.onnx", "/etc/passwd", "model.json", "sub/model.onnx"])
def test_paths_must_be_plain_names_beside_the_card(tmp_path: Path, path: str) -> None:
    src = write_models(tmp_path / "models")
    card = json.loads((src / "model.json").read_text())
    card["files"]["fp32"]["path"] = path
    (src / "model.json").write_text(json.dumps(card))
    assert "must be a plain file name" in failure(src, tmp_path)


def test_a_card_that_is_not_json_fails(tmp_path: Path) -> None:
    src = write_models(tmp_path / "models")
    (src / "model.json").write_text("{not json")
    assert "is not a model card" in failure(src, tmp_path)
