"""Ingest reads .dcm slices in a folder source through the service's decoder, windowed as params say, and
stores them as the same grey PNG a PNG source gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from service.card import DicomWindow
from service.inputs.imaging import decode
from tests.service.dicom_kit import ct_bytes, edited
from tests.training.conftest import LONG, build_kaggle_folder, grey_image, toy_params, write_params
from training import ingest


def run(work: Path, source: Path, window: dict | None = None) -> dict:
    params = toy_params(str(source))
    if window is not None:
        params["preprocess"]["dicom_window"] = window
    write_params(work, params)
    ingest.main()
    return json.loads((work / "data/prepared/manifest.json").read_text())


def stored(work: Path, manifest: dict, source: str) -> np.ndarray:
    (row,) = [r for r in manifest["records"] if r["source"] == source]
    with Image.open(work / "data/prepared" / row["file"]) as image:
        return np.asarray(image)


def plant_dicoms(root: Path) -> tuple[np.ndarray, str]:
    """A new slice as .dcm, a .dcm copy of a PNG already there, and an MR slice; returns the new one."""
    data = root / "Data"
    folder = data / "train" / LONG["adenocarcinoma"]
    new = np.asarray(grey_image(777))
    (folder / "slice.dcm").write_bytes(ct_bytes(new, slope=0.5))
    copy = np.asarray(Image.open(folder / "adenocarcinoma_0.png").convert("L"))
    (data / "valid" / LONG["adenocarcinoma"] / "copy.dcm").write_bytes(ct_bytes(copy))
    (folder / "mr.dcm").write_bytes(edited(ct_bytes(np.asarray(grey_image(778))), Modality="MR"))
    return new, f"train/{LONG['adenocarcinoma']}/slice.dcm"


def test_dicom_slices_become_the_same_grey_png(workdir: Path, tmp_path: Path) -> None:
    build_kaggle_folder(tmp_path)
    plain = run(workdir, tmp_path / "Data")
    new, source = plant_dicoms(tmp_path)
    manifest = run(workdir, tmp_path / "Data")
    assert np.array_equal(stored(workdir, manifest, source), new)
    assert len(manifest["records"]) == len(plain["records"]) + 1  # the copy collapsed onto its PNG
    assert manifest["skipped"]["duplicate"] == plain["skipped"]["duplicate"] + 1
    assert manifest["skipped"]["undecodable"] == plain["skipped"]["undecodable"] + 1  # the MR slice


def test_the_window_comes_from_params(workdir: Path, tmp_path: Path) -> None:
    build_kaggle_folder(tmp_path)
    new, source = plant_dicoms(tmp_path)
    manifest = run(workdir, tmp_path / "Data", window={"width": 400, "level": 40})
    data = (tmp_path / "Data" / source).read_bytes()
    expected = np.asarray(decode(data, ingest.INGEST_LIMITS, DicomWindow(width=400.0, level=40.0)))
    got = stored(workdir, manifest, source)
    assert np.array_equal(got, expected) and not np.array_equal(got, new)
