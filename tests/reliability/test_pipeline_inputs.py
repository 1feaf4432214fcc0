"""Bad sources for ingest beyond tests/training/test_ingest.py (which covers a corrupt image, a missing
class folder, an empty dataset, a `../` zip entry, an unreachable URL and an unmodified folder): each
gives a clear error or a counted skip, never silent success, and a zip source is not modified."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.card import DicomWindow, labels_for
from tests.training.conftest import build_kaggle_folder, grey_image, png_bytes, toy_params, write_params
from training import ingest
from training.params import load_params
from training.sources import SourceError, iter_source


@pytest.fixture
def kaggle(tmp_path: Path) -> Path:
    build_kaggle_folder(tmp_path / "src")
    return tmp_path / "src" / "Data"


def data_for(tmp_path: Path, source: str):
    write_params(tmp_path, toy_params(source))
    return load_params(tmp_path / "params.yaml").data


def zipped(folder: Path, target: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(target, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, path.relative_to(folder.parent).as_posix())
        for name, data in extra.items():
            bundle.writestr(zipfile.ZipInfo(name), data)
    return target


def test_unsafe_zip_names_are_counted_and_the_zip_is_untouched(kaggle: Path, tmp_path: Path) -> None:
    image = png_bytes(grey_image(4242))
    archive = zipped(
        kaggle,
        tmp_path / "ct.zip",
        {
            "/abs/normal/a.png": image,
            "..\\..\\normal\\b.png": image,
            "Data/train/normal/../../../../c.png": image,
        },
    )
    before = hashlib.sha256(archive.read_bytes()).hexdigest()
    data = data_for(tmp_path, str(archive))
    found, skipped = ingest.collect(data, labels_for(data.task), DicomWindow())
    assert skipped["unsafe_zip_path"] == 3, skipped
    assert found and skipped["undecodable"] == 1  # the corrupt image is a counted skip
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == before
    assert not any((tmp_path / name).exists() for name in ("abs", "c.png", "normal"))


def test_a_corrupt_zip_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    good = zipped(build_dir(tmp_path), tmp_path / "good.zip", {})
    archive.write_bytes(good.read_bytes()[:-30])  # the central directory is cut off
    with pytest.raises(SourceError, match="neither a folder nor a zip file|not a readable zip file"):
        list(iter_source(str(archive), None, ["normal"], Counter()))


def build_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny" / "normal"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(grey_image(1)))
    return folder.parent


@pytest.fixture
def web(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "web"
    root.mkdir()
    (root / "page.zip").write_text("<html><body>Please log in</body></html>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "message"),
    [("/page.zip", "did not return a zip file"), ("/missing.zip", "cannot download")],
)
def test_a_url_that_is_not_a_zip_is_a_clear_error(
    web: str, path: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, toy_params(web + path))
    with pytest.raises(SystemExit, match=message):
        ingest.main()
    assert not (tmp_path / "data" / "prepared").exists()
