"""The prepared-data manifest, and loading a split as tensors through the service's preprocessing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.card import DicomWindow, InputSpec
from service.inputs.imaging import preprocess
from training.artifacts import PREPARED_DIR
from training.params import Preprocess

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


def input_spec(p: Preprocess) -> InputSpec:
    """The preprocessing contract built from params; export copies it into the model card."""
    return InputSpec(size=p.image_size, mean=p.mean, std=p.std, dicom_window=dicom_window(p))


def dicom_window(p: Preprocess) -> DicomWindow:
    """The DICOM window of params, as ingest applies it and the card carries it."""
    return DicomWindow(width=p.dicom_window.width, level=p.dicom_window.level)


@dataclass(frozen=True)
class Record:
    sha256: str  # of the decoded grey pixels: equal images share it
    source: str  # where the first copy was found, relative to the source root
    label: str
    split: str
    file: str  # the prepared PNG, relative to the prepared folder
    width: int
    height: int
    group: str = ""  # its near-duplicate group (the sha256 of the group's first image); one split per group


def read_manifest(prepared: Path = PREPARED_DIR) -> dict:
    return json.loads((Path(prepared) / MANIFEST).read_text())


def records(manifest: dict, split: str | None = None) -> list[Record]:
    rows = [Record(**row) for row in manifest["records"]]
    return [r for r in rows if split is None or r.split == split]


def load_split(
    split: str, spec: InputSpec, prepared: Path = PREPARED_DIR
) -> tuple[np.ndarray, np.ndarray, list[Record]]:
    """All images of a split as (N, 1, S, S) float32 and label indices, preprocessed once."""
    from PIL import Image  # training-side import kept local: only loaders need it

    manifest = read_manifest(prepared)
    labels = manifest["labels"]
    rows = records(manifest, split)
    if not rows:
        raise ValueError(f"split {split!r} of {prepared} is empty")
    tensors = np.empty((len(rows), 1, spec.size, spec.size), dtype=np.float32)
    for i, row in enumerate(rows):
        with Image.open(Path(prepared) / row.file) as image:
            tensors[i] = preprocess(image.convert("L"), spec)
    targets = np.array([labels.index(r.label) for r in rows], dtype=np.int64)
    return tensors, targets, rows
