"""Ingest: Kaggle layouts (folder, zip, URL), checks, duplicates, a leak-free stratified split."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from tests.training.conftest import toy_params, write_params
from training import ingest
from training.params import load_params


def run_ingest(work: Path, source: str, task: str = "binary") -> dict:
    write_params(work, toy_params(source, task))
    ingest.main()
    return json.loads((work / "data/prepared/manifest.json").read_text())


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_folder_source_checks_dedups_and_splits_without_leaks(workdir, kaggle_folder):
    before = tree_digest(kaggle_folder)
    manifest = run_ingest(workdir, str(kaggle_folder))
    records = manifest["records"]
    # binary: 6 + 1 (the JPEG) normal and 6 adenocarcinoma distinct images; other classes dropped
    assert sorted({r["label"] for r in records}) == ["adenocarcinoma", "normal"]
    assert len(records) == 13
    assert manifest["skipped"] == {
        "duplicate": 2,
        "other_class_for_task": 12,
        "too_small": 1,
        "undecodable": 1,
    }
    hashes = [r["sha256"] for r in records]
    assert len(hashes) == len(set(hashes)), "a content hash appears twice"
    for split in ("train", "val", "test"):
        assert {r["label"] for r in records if r["split"] == split} == {"normal", "adenocarcinoma"}
    # the JPEG named .png is ingested, and every prepared file is the decoded grey PNG
    assert any(r["source"].endswith("really_a_jpeg.png") for r in records)
    for r in records:
        assert (workdir / "data/prepared" / r["file"]).is_file()
    assert json.loads((workdir / "reports/ingest.json").read_text())["images"] == 13
    assert tree_digest(kaggle_folder) == before, "ingest modified its source"


def test_long_and_short_class_names_map_to_one_label():
    assert ingest.class_of("adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib") == "adenocarcinoma"
    assert ingest.class_of("adenocarcinoma") == "adenocarcinoma"
    assert ingest.class_of("large.cell.carcinoma_left.hilum_T2_N2_M0_IIIa") == "large_cell_carcinoma"
    assert ingest.class_of("squamous.cell.carcinoma") == "squamous_cell_carcinoma"
    assert ingest.class_of("normal") == "normal"
    assert ingest.class_of("cats") is None


def test_multiclass_keeps_four_labels(workdir, kaggle_folder):
    manifest = run_ingest(workdir, str(kaggle_folder), task="multiclass")
    assert manifest["labels"] == ["normal", "adenocarcinoma", "large_cell_carcinoma", "squamous_cell_carcinoma"]
    assert {r["label"] for r in manifest["records"]} == set(manifest["labels"])
    assert "other_class_for_task" not in manifest["skipped"]


def test_split_is_seeded(workdir, kaggle_folder):
    first = run_ingest(workdir, str(kaggle_folder))
    second = run_ingest(workdir, str(kaggle_folder))
    assert first["records"] == second["records"]


def zip_folder(folder: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w") as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                bundle.write(path, Path("archive") / path.relative_to(folder.parent))
        for name, data in (extra or {}).items():
            bundle.writestr(name, data)
    return target


def test_zip_source_matches_folder_and_skips_path_traversal(workdir, kaggle_folder, tmp_path):
    from_folder = run_ingest(workdir, str(kaggle_folder))
    png = (kaggle_folder / "test" / "normal" / "normal_2.png").read_bytes()
    archive = zip_folder(kaggle_folder, tmp_path / "ct.zip", {"../../evil/normal/x.png": png})
    from_zip = run_ingest(workdir, str(archive))
    assert [r["sha256"] for r in from_zip["records"]] == [r["sha256"] for r in from_folder["records"]]
    assert from_zip["skipped"]["unsafe_zip_path"] == 1
    assert not (tmp_path / "evil").exists()


@pytest.fixture
def http_server(tmp_path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler_class = http.server.SimpleHTTPRequestHandler
    handler_class.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_source_downloads_a_zip(workdir, kaggle_folder, tmp_path, http_server):
    zip_folder(kaggle_folder, tmp_path / "ct.zip")
    manifest = run_ingest(workdir, f"{http_server}/ct.zip")
    assert len(manifest["records"]) == 13
    assert manifest["source_root"] is None


@pytest.mark.parametrize(
    "source, message",
    [
        ("http://127.0.0.1:9/nothing.zip", "cannot download"),
        ("does/not/exist", "no such file or folder"),
    ],
)
def test_unreachable_sources_fail_clearly(workdir, source, message):
    write_params(workdir, toy_params(source))
    with pytest.raises(SystemExit) as stop:
        ingest.main()
    assert message in str(stop.value)
    assert not (workdir / "data/prepared").exists()


def test_missing_class_folder_and_empty_dataset_fail_clearly(workdir, kaggle_folder, tmp_path):
    for folder in kaggle_folder.glob("*/normal"):
        shutil.rmtree(folder)
    write_params(workdir, toy_params(str(kaggle_folder)))
    with pytest.raises(SystemExit, match="class 'normal' has 0 usable image"):
        ingest.main()
    empty = tmp_path / "empty"
    empty.mkdir()
    write_params(workdir, toy_params(str(empty)))
    with pytest.raises(SystemExit, match="no usable images"):
        ingest.main()


def test_failed_ingest_keeps_the_previous_output(workdir, kaggle_folder):
    good = run_ingest(workdir, str(kaggle_folder))
    write_params(workdir, toy_params("does/not/exist"))
    with pytest.raises(SystemExit):
        ingest.main()
    assert json.loads((workdir / "data/prepared/manifest.json").read_text()) == good


def test_misspelt_params_key_is_an_error(tmp_path):
    params = toy_params()
    params["train"]["epocs"] = params["train"].pop("epochs")
    path = tmp_path / "params.yaml"
    write_params(tmp_path, params)
    from training.params import ParamsError

    with pytest.raises(ParamsError, match="train: unknown key\\(s\\) epocs"):
        load_params(path)
