"""Where ingest reads images from: the synthetic generator, a folder, a zip file, or a zip at a URL.

Every source yields (relative source path, class-folder name, encoded bytes); nothing is extracted to
disk and the source itself is never modified.
"""

from __future__ import annotations

import io
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}  # what a file is, is sniffed from its bytes later
MAX_DOWNLOAD_BYTES = 4 * 1024**3
MAX_MEMBER_BYTES = 64 * 1024**2
DOWNLOAD_TIMEOUT_S = 60

Item = tuple[str, str, bytes]


class SourceError(RuntimeError):
    """The source cannot be read at all (as opposed to one bad file, which is skipped and counted)."""


def iter_source(source: str, synthetic, labels: list[str], skipped: Counter) -> Iterator[Item]:
    if source == "synthetic":
        yield from _synthetic(synthetic, labels)
    elif source.startswith(("http://", "https://")):
        with tempfile.TemporaryDirectory(prefix="ingest-") as tmp:
            archive = _download(source, Path(tmp) / "source.zip")
            yield from _zip(archive, skipped)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise SourceError(f"data.source {source!r}: no such file or folder")
        if path.is_dir():
            yield from _folder(path)
        elif zipfile.is_zipfile(path):
            yield from _zip(path, skipped)
        else:
            raise SourceError(f"data.source {source!r} is neither a folder nor a zip file")


def source_root(source: str) -> str | None:
    """Absolute folder the manifest's source paths are relative to (None when not on disk)."""
    if source == "synthetic" or source.startswith(("http://", "https://")):
        return None
    path = Path(source).expanduser().resolve()
    return str(path) if path.is_dir() else None


def _synthetic(settings, labels: list[str]) -> Iterator[Item]:
    from training.synthetic import generate

    for label, index, pixels in generate(labels, settings.images_per_class, settings.size, settings.seed):
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
        yield f"synthetic/{label}/{index:04d}.png", label, buffer.getvalue()


def _folder(root: Path) -> Iterator[Item]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            relative = path.relative_to(root).as_posix()
            yield relative, path.parent.name, path.read_bytes()


def _zip(archive: Path, skipped: Counter) -> Iterator[Item]:
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{archive.name} is not a readable zip file: {exc}") from None
    with bundle:
        for info in sorted(bundle.infolist(), key=lambda i: i.filename):
            name = PurePosixPath(info.filename)
            if info.is_dir() or name.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if name.is_absolute() or ".." in name.parts or "\\" in info.filename:
                skipped["unsafe_zip_path"] += 1  # path traversal: never read, never extracted
                continue
            if info.file_size > MAX_MEMBER_BYTES:
                skipped["too_large"] += 1
                continue
            try:
                data = bundle.read(info)
            except (zipfile.BadZipFile, OSError, EOFError):
                skipped["unreadable_zip_member"] += 1
                continue
            yield name.as_posix(), name.parent.name, data


def _download(url: str, target: Path) -> Path:
    request = urllib.request.Request(url, headers={"User-Agent": "chest-cancer-net-ingest"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, target.open("wb") as out:
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise SourceError(f"{url}: download exceeds {MAX_DOWNLOAD_BYTES >> 30} GiB")
                out.write(chunk)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot download {url}: {reason}") from None
    if not zipfile.is_zipfile(target):
        raise SourceError(f"{url} did not return a zip file")
    return target
