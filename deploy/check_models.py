"""Image build gate: models/ must hold a card whose files all match it; copy the card, one variant and
the OOD statistics file the card lists (when it lists one).

    python3 deploy/check_models.py --variant VARIANT SRC_DIR DEST_DIR

Every file the card lists is checked (a folder that is not one export's output fails), but only the
variant the image serves is copied, as the very bytes that were hashed. Standard library only: it runs
on the bare base image. Exits 1 with one clear line when anything is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

CARD = "model.json"
OOD_STATS = "OOD statistics"  # how the card's ood.statistics file is named in messages
HOW = "build the model with `dvc repro` (or fetch it with `dvc pull`) before building the image"


class ModelsError(Exception):
    pass


def verified_files(src: Path, variant: str) -> dict[str, bytes]:
    """{file name: bytes} for the card and the `variant` file, after checking every listed file."""
    if not src.is_dir():
        raise ModelsError(f"{src} is missing: {HOW}")
    try:
        card_bytes = (src / CARD).read_bytes()
    except FileNotFoundError:
        raise ModelsError(f"{src / CARD} is missing: {HOW}") from None
    try:
        card = json.loads(card_bytes)
        entries = {variant: (f["path"], f["sha256"], int(f["bytes"])) for variant, f in card["files"].items()}
        stats = (card.get("ood") or {}).get("statistics")
        if stats is not None:
            entries[OOD_STATS] = (stats["path"], stats["sha256"], int(stats["bytes"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelsError(f"{src / CARD} is not a model card with files (path, sha256, bytes): {exc!r}") from None
    if variant not in entries or variant == OOD_STATS:
        raise ModelsError(f"{src / CARD} lists no {variant!r} file (has: {', '.join(card['files']) or 'none'})")
    out = {CARD: card_bytes}
    for listed, (name, sha256, size) in entries.items():
        if Path(name).name != name or name in (CARD, "", ".", ".."):
            raise ModelsError(f"{src / CARD}: the {listed} path {name!r} must be a plain file name beside the card")
        try:
            data = (src / name).read_bytes()
        except FileNotFoundError:
            raise ModelsError(f"{src / name} is missing (the card's {listed} file): {HOW}") from None
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != size or digest != sha256:
            raise ModelsError(
                f"{src / name} does not match its card: {len(data)} bytes, sha256 {digest[:12]}… "
                f"(card: {size} bytes, {sha256[:12]}…); rebuild with `dvc repro` or `dvc pull`"
            )
        if listed in (variant, OOD_STATS):
            out[name] = data
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="the variant the image serves (its MODEL_VARIANT)")
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    args = parser.parse_args(argv)
    try:
        files = verified_files(args.src, args.variant)
    except ModelsError as exc:
        print(f"models check failed: {exc}", file=sys.stderr)
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.dest / name).write_bytes(data)
    print(f"models check passed: {', '.join(sorted(files))} ({sum(map(len, files.values())) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
