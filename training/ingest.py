"""DVC stage `ingest`: read the source, check every image, collapse duplicates, split, write data/prepared.

Duplicates are found on decoded grey pixels and collapsed *before* the seeded, stratified split, so no
image can sit in two splits; near-duplicates (training.near_duplicates) are grouped and each group is
split as one, so no near-copy of a test image is trained on. The source's own train/valid/test folders
are ignored (they leak).
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
from training import atomic, near_duplicates, plots
from training.artifacts import INGEST_REPORT as REPORT
from training.artifacts import NEAR_DUPLICATES_PLOT, PREPARED_DIR
from training.data import MANIFEST, SPLITS, dicom_window
from training.params import Data, load_params
from training.sources import SourceError, iter_source, source_root
from training.tracking import stage_run

# Generous: ingest reads trusted-but-messy files; the size floor comes from params (data.min_side).
INGEST_LIMITS = DecodeLimits(max_pixels=8192 * 8192, min_side=1, max_aspect=100.0)
# A near-duplicate group larger than this share of the images means the threshold joins unrelated slices
# (it chains through them): the split could no longer be stratified, so ingest stops and says so.
MAX_GROUP_SHARE = 0.1
GROUP_CAP_FLOOR = 20  # the cap never falls below this many images (small sources)
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


def near_duplicate_groups(found: dict[str, dict], max_distance: float) -> tuple[dict[str, str], dict]:
    """hash -> its group's id (the group's first hash in sorted order), and the grouping's summary.
    Writes reports/near_duplicates.png: the joined pairs least alike and the closest kept apart."""
    digests = sorted(found)
    prints = np.stack([near_duplicates.fingerprint(found[d]["image"]) for d in digests])
    grouping = near_duplicates.group(prints, max_distance)
    first: dict[int, str] = {}
    for digest, g in zip(digests, grouping.group, strict=True):
        first.setdefault(int(g), digest)
    joined = sorted(grouping.pairs, key=lambda p: -p[2])[:4]
    missed = near_duplicates.nearest_unjoined(prints, grouping, 2)
    shown = {i for p in joined + missed for i in p[:2]}
    images = [np.asarray(found[d]["image"]) if i in shown else None for i, d in enumerate(digests)]
    plots.near_duplicate_pairs(joined, missed, images, max_distance, NEAR_DUPLICATES_PLOT)
    summary = grouping.summary(max_distance) | {"mixed_label_groups": _mixed(found, digests, grouping.group)}
    return {d: first[int(g)] for d, g in zip(digests, grouping.group, strict=True)}, summary


def near_duplicate_distance(data: Data) -> float:
    """The grouping threshold for this source. The synthetic generator draws every image independently
    from one anatomy template: its images look alike by construction and are never copies, so they are
    not grouped (at 0.3, 480 of 600 phantoms chained into one group)."""
    return 0.0 if data.source == "synthetic" else data.near_duplicates


def _mixed(found: dict[str, dict], digests: list[str], group: np.ndarray) -> int:
    labels: dict[int, set[str]] = defaultdict(set)
    for digest, g in zip(digests, group, strict=True):
        labels[int(g)].add(found[digest]["label"])
    return sum(len(v) > 1 for v in labels.values())


def split(found: dict[str, dict], groups: dict[str, str], data: Data, labels: list[str]) -> dict[str, str]:
    """hash -> split, stratified per class and seeded, whole near-duplicate groups at a time (a group
    counts under its first image's class); every split gets at least one group per class."""
    rng = np.random.default_rng(data.seed)
    members: dict[str, list[str]] = defaultdict(list)
    for digest in sorted(found):
        members[groups[digest]].append(digest)
    by_label: dict[str, list[str]] = defaultdict(list)
    for group_id in sorted(members):
        by_label[found[group_id]["label"]].append(group_id)
    assignment: dict[str, str] = {}
    for label in labels:
        group_ids = by_label.get(label, [])
        total = sum(len(members[g]) for g in group_ids)
        if len(group_ids) < len(SPLITS):
            raise IngestError(
                f"class {label!r} has {total} usable image(s) in {len(group_ids)} near-duplicate group(s) in "
                f"{data.source!r}; need at least {len(SPLITS)} groups (is its class folder missing?)"
            )
        want = {"test": max(1, round(total * data.split.test)), "val": max(1, round(total * data.split.val))}
        order = [group_ids[i] for i in rng.permutation(len(group_ids))]
        used: Counter = Counter()  # images of this class per split so far
        for rank, group_id in enumerate(order):
            part = _next_split(used, want, len(members[group_id]), len(order) - rank)
            used[part] += len(members[group_id])
            for digest in members[group_id]:
                assignment[digest] = part
    return assignment


def _next_split(used: Counter, want: dict[str, int], size: int, groups_left: int) -> str:
    """Where the next group goes: test, then validation, up to their share (a group that would overshoot
    a started split waits for training); when only as many groups are left as splits still empty, each
    empty split takes one, so every split holds the class."""
    empty = [s for s in ("train", "val", "test") if used[s] == 0]
    if groups_left <= len(empty):
        return empty[0]
    for part in ("test", "val"):
        if used[part] < want[part] and (used[part] == 0 or used[part] + size <= want[part]):
            return part
    return "train"


def write_prepared(found, assignment, groups, data: Data, labels, skipped, out: Path = PREPARED_DIR) -> dict:
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
                "group": groups[digest],
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
        groups, grouping = near_duplicate_groups(found, near_duplicate_distance(data))
        if grouping["largest_group"] > max(GROUP_CAP_FLOOR, MAX_GROUP_SHARE * len(found)):
            raise IngestError(
                f"data.near_duplicates {data.near_duplicates} joins {grouping['largest_group']} of {len(found)} "
                "images into one group: it is too loose for this data (lower it, or 0 to turn grouping off)"
            )
        manifest = write_prepared(found, split(found, groups, data, labels), groups, data, labels, skipped)
    except (IngestError, SourceError) as exc:
        sys.exit(f"ingest: {exc}")
    report = {
        "images": len(manifest["records"]),
        "counts": manifest["counts"],
        "skipped": manifest["skipped"],
        "near_duplicates": grouping,
    }
    atomic.write_json(REPORT, report)
    logged = {"data": params.raw["data"], "preprocess.dicom_window": params.raw["preprocess"]["dicom_window"]}
    with stage_run("ingest", logged) as mlflow:
        mlflow.log_metrics({"images": report["images"], "skipped": sum(report["skipped"].values())})
        mlflow.log_artifact(str(REPORT))
        mlflow.log_artifact(str(NEAR_DUPLICATES_PLOT))
    print(
        f"ingest: {report['images']} distinct images, counts {report['counts']}, skipped {report['skipped']}; "
        f"near-duplicates: {grouping['merged_groups']} groups of {grouping['images_in_merged_groups']} images "
        f"kept within one split (largest {grouping['largest_group']})"
    )


if __name__ == "__main__":
    main()
