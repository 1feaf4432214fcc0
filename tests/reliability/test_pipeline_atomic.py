"""Every stage writes its outputs atomically: a stage killed (SIGKILL) or failing mid-write leaves the
previous output or none, never a half-written file or folder that a later stage or the service could
take for a good one. Stray temporaries are hidden `.<name>.*.tmp` siblings that nothing reads."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from hashlib import sha256
from pathlib import Path

import pytest

from tests.reliability.rel_kit import REPO
from training import atomic

# Writes outside training/atomic.py, each allowed for the reason given: it goes into a folder that
# replace_dir (or a temporary directory) owns until the whole output is complete.
ALLOWED_WRITES = {
    ("training/ingest.py", "grey.save(target"): "into replace_dir's temporary folder (store_grey)",
    ("training/model.py", "torch.save(payload, buffer)"): "into memory, then atomic.write_bytes",
    ("training/plots.py", "fig.savefig(buffer"): "into memory, then atomic.write_bytes",
    ("training/sources.py", ".save(buffer"): "into memory",
    ("training/sources.py", 'target.open("wb")'): "a download into a TemporaryDirectory",
    ("export/onnx_export.py", "torch.onnx.export("): "into export's staging folder",
    ("export/quantize.py", "quantize_static("): "into export's staging folder",
    ("export/preprocess_check.py", "image.save(out"): "into memory",
    ("export/stage.py", "shutil.move(staging"): "inside replace_dir's build: models/ is swapped in whole",
    ("export/stage.py", "(staging / OOD_STATS_FILE).write_bytes"): "into export's staging folder",
    ("training/ood_sets.py", ".save(out"): "into memory",
    ("export/write_card.py", "(model_dir / CARD_FILE).write_bytes"): "into export's staging folder",
    # make cv-smoke's throwaway copy of the project (a folder it creates), never a stage's output.
    ("training/cv_smoke.py", "shutil.copytree(source, root / item"): "into cv-smoke's own sandbox folder",
    ("training/cv_smoke.py", "shutil.copy2(source, root / item)"): "into cv-smoke's own sandbox folder",
    ("training/cv_smoke.py", '(root / "params.yaml").write_text'): "into cv-smoke's own sandbox folder",
}
WRITE = re.compile(
    r"write_text\(|write_bytes\(|\.open\([\"'][wa]|open\([^)]*[\"'][wa]b?[\"']|torch\.save\(|savefig\(|"
    r"onnx\.save\(|torch\.onnx\.export\(|quantize_static\(|\.save\(|shutil\.(move|copy)"
)


def test_every_stage_output_goes_through_atomic() -> None:
    found = set()
    for path in sorted([*REPO.glob("training/*.py"), *REPO.glob("export/*.py")]):
        name = path.relative_to(REPO).as_posix()
        if name == "training/atomic.py":
            continue
        for line in path.read_text().splitlines():
            if WRITE.search(line) and "atomic." not in line:
                allowed = [key for key in ALLOWED_WRITES if key[0] == name and key[1] in line]
                assert allowed, f"{name}: a direct write outside training/atomic.py: {line.strip()}"
                found.update(allowed)
    assert found == set(ALLOWED_WRITES), f"allow-list entries no longer used: {set(ALLOWED_WRITES) - found}"


def _kill_storm(script: str, tmp_path: Path, trials: int, check, ready_timeout: float = 60.0) -> int:
    """Run `script` (which prints 'go' and then writes in a loop) and SIGKILL it at random moments;
    after each kill `check()` must find the output complete or absent. Returns the kills made."""
    rng = random.Random(7)
    program = tmp_path / "writer.py"
    program.write_text(textwrap.dedent(script))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(trials):
        proc = subprocess.Popen(
            [sys.executable, str(program), str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, env=env
        )
        try:
            assert proc.stdout is not None
            deadline = time.perf_counter() + ready_timeout
            while proc.stdout.readline().strip() != b"go":
                assert proc.poll() is None and time.perf_counter() < deadline, "the writer did not start"
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
        check()
    return trials


def test_sigkill_during_atomic_writes_leaves_the_old_file_or_the_new(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "metrics.json"
    script = """
        import hashlib, json, os, sys
        from pathlib import Path
        from training import atomic
        target = Path(sys.argv[1]) / "reports" / "metrics.json"
        print("go", flush=True)
        i = 0
        while True:
            blob = os.urandom(2_000_000).hex()
            atomic.write_json(target, {"version": i, "blob": blob, "sha": hashlib.sha256(blob.encode()).hexdigest()})
            i += 1
    """

    def check() -> None:
        if target.exists():
            value = json.loads(target.read_text())  # never half a JSON document
            assert sha256(value["blob"].encode()).hexdigest() == value["sha"]
        strays = [p.name for p in target.parent.iterdir() if p != target] if target.parent.exists() else []
        assert all(re.fullmatch(r"\.metrics\.json\..+\.tmp", name) for name in strays), strays

    assert _kill_storm(script, tmp_path, trials=12, check=check) == 12
    assert target.exists()


def test_sigkill_during_a_folder_output_leaves_a_consistent_folder(tmp_path: Path) -> None:
    """data/prepared and models/ are built aside and swapped in by replace_dir: the folder is either
    absent or has a manifest that matches its files exactly."""
    out = tmp_path / "data" / "prepared"
    script = """
        import hashlib, json, os, sys
        from pathlib import Path
        from training import atomic
        out = Path(sys.argv[1]) / "data" / "prepared"

        def build(tmp):
            (tmp / "images").mkdir()
            records = {}
            for k in range(40):
                data = os.urandom(50_000)
                (tmp / "images" / f"{k}.png").write_bytes(data)
                records[f"images/{k}.png"] = hashlib.sha256(data).hexdigest()
            atomic.write_json(tmp / "manifest.json", records)

        print("go", flush=True)
        while True:
            atomic.replace_dir(out, build)
    """

    def check() -> None:
        if not out.exists():
            return
        manifest = json.loads((out / "manifest.json").read_text())
        files = {p.relative_to(out).as_posix() for p in (out / "images").iterdir()}
        assert files == set(manifest)
        for name, digest in manifest.items():
            assert sha256((out / name).read_bytes()).hexdigest() == digest
        strays = [p.name for p in out.parent.iterdir() if p != out]
        assert all(re.fullmatch(r"\.prepared\..+\.(tmp|old)", name) or name == ".prepared.old" for name in strays)

    _kill_storm(script, tmp_path, trials=10, check=check)


def test_a_build_that_fails_midway_keeps_the_previous_folder(tmp_path: Path) -> None:
    final = tmp_path / "models"

    def good(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(b"good")
        (tmp / "model.json").write_text("{}")

    def breaks_midway(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(b"half")
        raise OSError("disk full")

    atomic.replace_dir(final, good)
    with pytest.raises(OSError, match="disk full"):
        atomic.replace_dir(final, breaks_midway)
    assert (final / "model.onnx").read_bytes() == b"good" and (final / "model.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # no temporary left behind


def test_a_write_that_fails_midway_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "best_params.json"
    atomic.write_json(target, {"lr": 0.1})

    def fail(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(OSError, match="I/O error"):
        atomic.write_json(target, {"lr": 0.2})
    assert json.loads(target.read_text()) == {"lr": 0.1}
    assert [p.name for p in tmp_path.iterdir()] == ["best_params.json"]


@pytest.mark.train
@pytest.mark.slow
def test_sigkill_while_saving_a_checkpoint(tmp_path: Path) -> None:
    """artifacts/model.pt is the whole checkpoint or absent: it always loads strictly."""
    pytest.importorskip("torch")
    target = tmp_path / "artifacts" / "model.pt"
    script = """
        import sys
        from pathlib import Path
        from training.model import build_model, save_checkpoint
        target = Path(sys.argv[1]) / "artifacts" / "model.pt"
        model = build_model("binary", ["normal", "adenocarcinoma"])
        print("go", flush=True)
        while True:
            save_checkpoint(model, target, ["normal", "adenocarcinoma"], "binary", {"lr": 0.01})
    """

    def check() -> None:
        from training.model import load_checkpoint

        if target.exists():
            _, meta = load_checkpoint(target)
            assert meta["labels"] == ["normal", "adenocarcinoma"]
        # A kill before the first save made its folder leaves nothing at all, which is also whole.
        leftovers = target.parent.iterdir() if target.parent.exists() else []
        assert all(p.name.startswith(".model.pt.") for p in leftovers if p != target)

    _kill_storm(script, tmp_path, trials=3, check=check)
