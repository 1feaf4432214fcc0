"""deploy/smoke_image.sh: build the runtime image with podman and smoke-test it (as root: it installs
podman and debootstrap from Debian when missing). Its last line gives the image size and start time."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.image
def test_image_builds_serves_and_stops_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    if not shutil.which("podman") and not (os.geteuid() == 0 and shutil.which("apt-get")):
        pytest.skip("needs podman, or root with apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip("the smoke test runs podman as root")
    result = subprocess.run(["bash", "deploy/smoke_image.sh"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"image \S+ \d+ MB, ready in [\d.]+ s", last), last
    with capsys.disabled():  # the size and start time belong in the CI log
        print(f"\n{last}")
