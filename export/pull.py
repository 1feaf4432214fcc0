"""Write a registered version's model folder (card + the files it lists) to a local directory, verified.

    python -m export.pull --alias champion --out DIR [--model NAME] [--force]
    python -m export.pull --version N --out DIR

The version's `model/` artifacts are downloaded into a staging folder beside DIR; the card must read
as the service reads it (service.card.read_card), every file it lists must have the card's size and
sha256 (service.card.read_file_verified, the check the service makes at load), nothing else may be in
the folder, and the card's hashes must be the ones the registry recorded at export (the version's
`sha256.<variant>` tags). Only then is the staging folder renamed to DIR, so DIR is either absent or
complete. An existing DIR that is not empty is refused unless --force (then it is replaced).

Exit codes: 0 pulled; 1 refused (a file is missing, does not match its card or the registry, DIR is
in the way), nothing left behind; 2 bad arguments; 3 no such model, version or alias; 4 no MLflow store
or server (or the download failed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from export.registry import (
    REFUSED,
    UNREACHABLE,
    RegistryError,
    connect,
    default_model_name,
    find_version,
    positive,
    tracking_uri,
)
from service.card import CARD_FILE, CardError, ModelCard, ModelFile, read_card, read_file_verified


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export.pull", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=positive, metavar="N")
    which.add_argument("--alias", metavar="ALIAS", help="champion, challenger, previous-champion")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the model folder to write")
    parser.add_argument("--model", metavar="NAME", help="registered model name (default: params.yaml export.name)")
    parser.add_argument("--force", action="store_true", help="replace DIR when it is not empty")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        check_target(args.out, args.force)
        name = args.model or default_model_name()
        client = connect()
        version = find_version(client, name, args.version, args.alias)
        card, size = pull(version, args.out)
    except RegistryError as exc:
        print(f"pull: {exc}", file=sys.stderr)
        return exc.code
    alias = f" ({', '.join(version.aliases)})" if version.aliases else ""
    print(
        f"pull: {name} version {version.version}{alias}, card {card.version}, into {args.out}: "
        f"{len(card.files)} models verified, {size / 1e6:.1f} MB"
    )
    return 0


def check_target(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RegistryError(f"{out} is not a folder: pull into a new folder", REFUSED)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RegistryError(f"{out} is not empty: pass --force to replace it", REFUSED)


def pull(version, out: Path) -> tuple[ModelCard, int]:
    """Download, verify, then rename into place; the staging folder never outlives the call."""
    from mlflow.artifacts import download_artifacts

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.pull-", dir=out.parent))
    try:
        try:
            where = download_artifacts(artifact_uri=version.source, dst_path=str(staging), tracking_uri=tracking_uri())
        except Exception as exc:  # mlflow raises its own, OSError or the store's errors: all one line here
            raise RegistryError(f"cannot download {version.source}: {exc}", UNREACHABLE) from None
        folder = Path(where)
        try:
            card, size = verify(folder, version.tags)
        except CardError as exc:
            raise RegistryError(f"refused {version.name} version {version.version}: {exc}", REFUSED) from None
        if out.is_dir():
            out.rename(staging / ".replaced")
        folder.rename(out)
        return card, size
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def verify(folder: Path, tags: dict[str, str]) -> tuple[ModelCard, int]:
    """The card and the bytes it accounts for; raises CardError on anything the service would refuse,
    on files it does not list, and on hashes other than the registry's."""
    card = read_card(folder)
    listed: dict[str, ModelFile] = dict(card.files)
    if card.ood is not None and card.ood.statistics is not None:
        listed["ood statistics"] = card.ood.statistics
    size = (folder / CARD_FILE).stat().st_size
    for what, entry in listed.items():
        if Path(entry.path).name != entry.path or entry.path in (CARD_FILE, ".", ".."):
            raise CardError(f"the card's {what} path {entry.path!r} is not a plain file name beside it")
        data = read_file_verified(folder, entry)
        if len(data) != entry.bytes:
            raise CardError(f"model file {folder / entry.path} has {len(data)} bytes, its card says {entry.bytes}")
        size += len(data)
    extra = sorted({p.name for p in folder.iterdir()} - {CARD_FILE} - {e.path for e in listed.values()})
    if extra:
        raise CardError(f"files the card does not list: {', '.join(extra)}")
    for variant, entry in card.files.items():
        recorded = tags.get(f"sha256.{variant}")
        if recorded != entry.sha256:
            said = f"{recorded[:12]}…" if recorded else "nothing"
            raise CardError(f"the card's {variant} sha256 {entry.sha256[:12]}… is not the registry's ({said})")
    return card, size


if __name__ == "__main__":
    sys.exit(main())
