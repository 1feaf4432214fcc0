"""DVC stage `ingest`: read the source, check every image, collapse duplicates, split, write data/prepared.

Duplicates are found on decoded grey pixels and collapsed *before* the seeded, stratified split, so no
image can sit in two splits; the source's own train/valid/test folders are ignored (they leak).
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from service.card import TASK_LABELS, DicomWindow, labels_for
from service.errors import ServiceError, UnsupportedMediaType
from service.inputs.imaging import DecodeLimits, decode, pixel_digest_source
from training import atomic
from training.artifacts import INGEST_REPORT as REPORT
from training.artifacts import PREPARED_DIR
from training.data import MANIFEST, SPLITS, dicom_window
from training.params import Data, load_params
from training.sources import SourceError, iter_source, source_root
from training.tracking import stage_run

# Generous: ingest reads trusted-but-messy files; the size floor comes from params (data.min_side).
INGEST_LIMITS = DecodeLimits(max_pixels=8192 * 8192, min_side=1, max_aspect=100.0)
# Kaggle class folders spell the labels with dots ("large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa").
_CLASS_PREFIXES = {
    spelling: label for label in TASK_LABELS["multiclass"] for spelling in (label, label.replace("_", "."))
}


class IngestError(RuntimeError):
    pass


def class_of(folder: str) -> str | None:
    """Canonical label of a Kaggle class folder (long or short name), None when unknown."""
    name = folder.lower()
    for prefix, label in _CLASS_PREFIXES.items():
        if name == prefix or name.startswith(prefix + "_"):
            return label
    return None


def collect(data: Data, labels: list[str], window: DicomWindow) -> tuple[dict[str, dict], Counter]:
    """Distinct images by pixel hash -> {label, source, grey image}; skipped files counted by reason.
    DICOM slices become grey through `window` (params' preprocess.dicom_window), as the service's do."""
    skipped: Counter = Counter()
    found: dict[str, dict] = {}
    conflicts: set[str] = set()
    items = iter_source(data.source, data.synthetic, labels, skipped)
    for source, folder, payload in tqdm(items, desc="ingest", unit="img", disable=not sys.stderr.isatty()):
        label = class_of(folder)
        if label is None:
            skipped["unknown_class_folder"] += 1
            continue
        if label not in labels:
            skipped["other_class_for_task"] += 1
            continue
        grey, reason = _check(payload, data.min_side, window)
        if grey is None:
            skipped[reason] += 1
            continue
        digest = hashlib.sha256(pixel_digest_source(grey)).hexdigest()
        if digest in found:
            skipped["duplicate"] += 1
            if found[digest]["label"] != label:
                conflicts.add(digest)
            continue
        found[digest] = {"label": label, "source": source, "image": grey}
    for digest in conflicts:  # the same pixels under two labels: trust neither
        del found[digest]
        skipped["conflicting_labels"] += 1
    return found, skipped


def _check(payload: bytes, min_side: int, window: DicomWindow) -> tuple[Image.Image | None, str]:
    try:
        grey = decode(payload, INGEST_LIMITS, window)
    except UnsupportedMediaType:
        return None, "unsupported_format"
    except ServiceError:
        return None, "undecodable"
    if min(grey.size) < min_side:
        return None, "too_small"
    return grey, ""


def store_grey(grey: Image.Image, target) -> None:
    """How a prepared image is kept: the decoded grey pixels, losslessly (fast PNG)."""
    grey.save(target, format="PNG", compress_level=1)


def split(found: dict[str, dict], data: Data, labels: list[str]) -> dict[str, str]:
    """hash -> split, stratified per class and seeded; every split gets at least one image per class."""
    rng = np.random.default_rng(data.seed)
    by_label: dict[str, list[str]] = defaultdict(list)
    for digest in sorted(found):
        by_label[found[digest]["label"]].append(digest)
    assignment: dict[str, str] = {}
    for label in labels:
        members = by_label.get(label, [])
        if len(members) < len(SPLITS):
            raise IngestError(
                f"class {label!r} has {len(members)} usable image(s) in {data.source!r}; "
                f"need at least {len(SPLITS)} (is its class folder missing?)"
            )
        order = rng.permutation(len(members))
        n_test = max(1, round(len(members) * data.split.test))
        n_val = max(1, round(len(members) * data.split.val))
        for rank, index in enumerate(order):
            part = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            assignment[members[index]] = part
    return assignment


def write_prepared(found, assignment, data: Data, labels, skipped, out: Path = PREPARED_DIR) -> dict:
    records = []
    for digest in sorted(found, key=lambda d: found[d]["source"]):
        item = found[digest]
        width, height = item["image"].size
        records.append(
            {
                "sha256": digest,
                "source": item["source"],
                "label": item["label"],
                "split": assignment[digest],
                "file": f"images/{digest}.png",
                "width": width,
                "height": height,
            }
        )
    counts = {s: {lab: sum(r["split"] == s and r["label"] == lab for r in records) for lab in labels} for s in SPLITS}
    manifest = {
        "task": data.task,
        "labels": labels,
        "source": data.source,
        "source_root": source_root(data.source),
        "records": records,
        "counts": counts,
        "skipped": dict(sorted(skipped.items())),
    }

    def build(tmp: Path) -> None:
        (tmp / "images").mkdir()
        for digest, item in found.items():
            store_grey(item["image"], tmp / "images" / f"{digest}.png")
        atomic.write_json(tmp / MANIFEST, manifest)

    atomic.replace_dir(out, build)
    return manifest


def main() -> None:
    params = load_params()
    data = params.data
    labels = labels_for(data.task)
    try:
        found, skipped = collect(data, labels, dicom_window(params.preprocess))
        if not found:
            raise IngestError(f"no usable images in {data.source!r} (skipped: {dict(skipped) or 'none'})")
        manifest = write_prepared(found, split(found, data, labels), data, labels, skipped)
    except (IngestError, SourceError) as exc:
        sys.exit(f"ingest: {exc}")
    report = {"images": len(manifest["records"]), "counts": manifest["counts"], "skipped": manifest["skipped"]}
    atomic.write_json(REPORT, report)
    logged = {"data": params.raw["data"], "preprocess.dicom_window": params.raw["preprocess"]["dicom_window"]}
    with stage_run("ingest", logged) as mlflow:
        mlflow.log_metrics({"images": report["images"], "skipped": sum(report["skipped"].values())})
        mlflow.log_artifact(str(REPORT))
    print(f"ingest: {report['images']} distinct images, counts {report['counts']}, skipped {report['skipped']}")


if __name__ == "__main__":
    main()
