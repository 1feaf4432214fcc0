"""export.promote and export.pull against a throw-away sqlite MLflow store, with versions registered the
way the export stage registers them (export.register) from the service tests' tiny model folder."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import msgspec
import pytest

from deploy.check_models import verified_files
from export import promote, pull
from service.card import CARD_FILE, read_card

pytest.importorskip("mlflow")
pytestmark = pytest.mark.train  # mlflow is the train extra's


@pytest.fixture
def name(request, tmp_path, monkeypatch, mlflow_uri) -> str:
    """A registered model name of this test's own in the session's store; the working directory is a
    temp folder (no params.yaml, no mlflow.db)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return "reg-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")


def register(name: str, model_dir: Path) -> str:
    """One version, as export.register makes it: the folder as the run's `model/` artifacts."""
    from export.register import register as register_version
    from training.tracking import stage_run

    card = msgspec.structs.replace(read_card(model_dir), name=name)
    with stage_run("export") as mlflow:
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        register_version(mlflow, mlflow.active_run(), card)
        run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    return next(str(v.version) for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id)


def aliases(name: str) -> dict[str, int]:
    from training.tracking import configure

    return {a: int(v) for a, v in configure().MlflowClient().get_registered_model(name).aliases.items()}


def stored(name: str, version: str) -> Path:
    """The version's artifact folder in the file store (what a tampering test edits)."""
    from training.tracking import configure

    source = configure().MlflowClient().get_model_version(name, version).source
    return Path(unquote(urlparse(source).path))


def run(module, capsys, *argv: str) -> tuple[int, str]:
    code = module.main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


# --- promote ------------------------------------------------------------------------------------------


def test_challenger_champion_and_rollback(name, model_dir, capsys):
    v1, v2 = register(name, model_dir), register(name, model_dir)
    assert run(promote, capsys, "--model", name, "--version", v1, "--alias", "champion")[0] == 0
    code, out = run(promote, capsys, "--model", name, "--version", v2, "--alias", "challenger")
    assert code == 0 and f"version {v2} is the challenger" in out
    assert aliases(name) == {"champion": int(v1), "challenger": int(v2)}

    code, out = run(promote, capsys, "--model", name, "--version", v2, "--alias", "champion")
    assert code == 0 and f"(previous champion: version {v1})" in out
    assert aliases(name) == {"champion": int(v2), "previous-champion": int(v1)}  # no longer a challenger
    code, out = run(promote, capsys, "--model", name, "--version", v2, "--alias", "champion")
    assert code == 0 and "already the champion" in out

    code, out = run(promote, capsys, "--model", name, "--rollback")
    assert code == 0 and f"version {v1} is the champion again" in out
    assert aliases(name) == {"champion": int(v1), "previous-champion": int(v2)}
    assert run(promote, capsys, "--model", name, "--rollback")[0] == 0  # a second rollback goes forward
    assert aliases(name) == {"champion": int(v2), "previous-champion": int(v1)}

    from training.tracking import configure

    tags = configure().MlflowClient().get_model_version(name, v2).tags
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tags["promoted.champion"])
    assert "promoted.challenger" in tags


def test_show_lists_versions_with_aliases_and_metrics(name, model_dir, capsys):
    v1, v2 = register(name, model_dir), register(name, model_dir)
    run(promote, capsys, "--model", name, "--version", v2, "--alias", "challenger")
    code, out = run(promote, capsys, "--model", name, "--show")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"{name} (2 versions)"
    sha = read_card(model_dir).files["int8"].sha256[:12]
    assert re.match(rf"\s+{v2}\s+challenger\s+0\.0\.0-test .* {sha}\s+test\.auc=0\.500$", lines[2])
    assert re.match(rf"\s+{v1}\s+-\s", lines[3])


def test_promote_errors_and_their_exit_codes(name, model_dir, capsys, tmp_path, monkeypatch):
    v1 = register(name, model_dir)
    code, out = run(promote, capsys, "--model", "no-such-model", "--version", "1", "--alias", "champion")
    assert code == 3 and "no registered model 'no-such-model'" in out
    code, out = run(promote, capsys, "--model", name, "--version", "99", "--alias", "champion")
    assert code == 3 and f"has no version 99 (versions: {v1})" in out
    code, out = run(promote, capsys, "--model", name, "--rollback")
    assert code == 3 and "no previous-champion to roll back to" in out
    # Not the export stage's: no sha256 tags.
    from training.tracking import configure

    bare = configure().MlflowClient().create_model_version(name, source=str(model_dir), await_creation_for=0)
    code, out = run(promote, capsys, "--model", name, "--version", str(bare.version), "--alias", "champion")
    assert code == 1 and "not registered by the export stage" in out
    # No params.yaml here and no --model: say so (exit 2, like argparse's own errors).
    code, out = run(promote, capsys, "--show")
    assert code == 2 and "pass --model NAME" in out
    bad = (["--alias", "champion"], ["--version", "0", "--alias", "champion"], ["--version", "1", "--alias", "x"])
    for argv in bad:
        with pytest.raises(SystemExit) as exit_:
            promote.main(["--model", name, *argv])
        assert exit_.value.code == 2
    capsys.readouterr()


def test_no_store_or_server_exits_4_and_creates_nothing(name, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    code, out = run(promote, capsys, "--model", name, "--show")
    assert code == 4 and f"no MLflow store at {tmp_path / 'mlflow.db'}" in out
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    started = time.monotonic()
    code, out = run(pull, capsys, "--model", name, "--alias", "champion", "--out", str(tmp_path / "m"))
    assert code == 4 and "the MLflow registry at http://127.0.0.1:9 failed" in out
    assert time.monotonic() - started < 30 and not (tmp_path / "m").exists()


# --- pull ---------------------------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_pull_writes_the_verified_folder(name, model_dir, capsys, tmp_path):
    version = register(name, model_dir)
    run(promote, capsys, "--model", name, "--version", version, "--alias", "challenger")
    out_dir = tmp_path / "host" / f"{name}-v{version}"
    code, out = run(pull, capsys, "--model", name, "--alias", "challenger", "--out", str(out_dir))
    assert code == 0, out
    assert f"{name} version {version} (challenger), card 0.0.0-test, into {out_dir}: 2 models verified" in out
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    for path in model_dir.iterdir():
        assert (out_dir / path.name).read_bytes() == path.read_bytes()
    assert leftovers(out_dir.parent) == []
    assert set(verified_files(out_dir, "int8")) == {CARD_FILE, "model.int8.onnx"}  # the image's gate agrees


def tamper_file(folder: Path) -> None:
    data = bytearray((folder / "model.int8.onnx").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.int8.onnx").write_bytes(bytes(data))


def tamper_card_too(folder: Path) -> None:
    """The file and a card that matches it: only the registry's record of the hash can tell."""
    tamper_file(folder)
    card = json.loads((folder / CARD_FILE).read_text())
    card["files"]["int8"]["sha256"] = hashlib.sha256((folder / "model.int8.onnx").read_bytes()).hexdigest()
    (folder / CARD_FILE).write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (tamper_file, "model.int8.onnx does not match its card: sha256"),
        (tamper_card_too, "the card's int8 sha256"),
        (lambda folder: (folder / "model.onnx").unlink(), "model file not found"),
        (lambda folder: (folder / "notes.txt").write_text("hi"), "files the card does not list: notes.txt"),
        (lambda folder: (folder / CARD_FILE).write_text("{"), "is not valid JSON"),
    ],
    ids=["tampered-file", "tampered-file-and-card", "missing-file", "extra-file", "broken-card"],
)
def test_pull_refuses_what_does_not_match_and_leaves_nothing(name, model_dir, capsys, tmp_path, damage, said):
    version = register(name, model_dir)
    damage(stored(name, version))
    out_dir = tmp_path / "host" / "candidate"
    code, out = run(pull, capsys, "--model", name, "--version", version, "--out", str(out_dir))
    assert code == 1 and said in out and f"refused {name} version {version}" in out
    assert len(out.strip().splitlines()) == 1
    assert not out_dir.exists() and leftovers(out_dir.parent) == []


def test_pull_into_an_existing_folder(name, model_dir, capsys, tmp_path):
    version = register(name, model_dir)
    out_dir = tmp_path / "models"
    out_dir.mkdir()
    assert run(pull, capsys, "--model", name, "--version", version, "--out", str(out_dir))[0] == 0  # empty: fine
    (out_dir / "model.onnx").write_bytes(b"old")
    code, out = run(pull, capsys, "--model", name, "--version", version, "--out", str(out_dir))
    assert code == 1 and "is not empty: pass --force" in out
    assert (out_dir / "model.onnx").read_bytes() == b"old"
    code, out = run(pull, capsys, "--model", name, "--version", version, "--out", str(out_dir), "--force")
    assert code == 0, out
    assert (out_dir / "model.onnx").read_bytes() == (model_dir / "model.onnx").read_bytes()
    assert leftovers(tmp_path) == []
    (tmp_path / "link").symlink_to(out_dir)
    code, out = run(pull, capsys, "--model", name, "--version", version, "--out", str(tmp_path / "link"), "--force")
    assert code == 1 and "is not a folder" in out


def test_pull_of_an_unknown_alias_or_model(name, model_dir, capsys, tmp_path):
    register(name, model_dir)
    code, out = run(pull, capsys, "--model", name, "--alias", "champion", "--out", str(tmp_path / "m"))
    assert code == 3 and f"model {name!r} has no alias 'champion' (aliases: none)" in out
    code, out = run(pull, capsys, "--model", "nope", "--version", "1", "--out", str(tmp_path / "m"))
    assert code == 3 and not (tmp_path / "m").exists()
    shutil.rmtree(tmp_path / "m", ignore_errors=True)
