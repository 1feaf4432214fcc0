"""`python -m service` as a real process: start-up checks, time to ready, SIGTERM draining."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import REPO, png_bytes


def run_once(env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_")} | env
    return subprocess.run(
        [sys.executable, "-m", "service", "--port", "9"], cwd=REPO, env=full, capture_output=True, text=True, timeout=60
    )


def test_bad_setting_stops_with_one_line() -> None:
    done = run_once({"BATCH_MAX_SIZE": "lots"})
    assert done.returncode == 2
    assert done.stderr.strip() == "service: BATCH_MAX_SIZE='lots' is invalid: expected a whole number from 1 to 256"


def test_sha256_mismatch_refuses_to_start(copy_model_dir: Callable[[], Path]) -> None:
    folder = copy_model_dir()
    data = bytearray((folder / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.int8.onnx").write_bytes(bytes(data))
    done = run_once({"MODEL_DIR": str(folder)})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match its card: sha256" in lines[0], done.stderr


def test_missing_model_refuses_to_start(tmp_path: Path) -> None:
    done = run_once({"MODEL_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"service: model card not found: {tmp_path / 'model.json'} (run `dvc repro` to build the model)"
    ]


def test_starts_serves_and_stops_on_sigterm(model_dir: Path, start_server) -> None:
    server = start_server(model_dir)
    seconds = server.wait_ready()
    assert seconds < 10, seconds  # the closing note reports the measured figure
    r = httpx.post(server.url + "/v1/predict", files={"file": ("jane-doe-ct.png", png_bytes(240), "image/png")})
    assert r.status_code == 200 and r.json()["label"] == "adenocarcinoma"
    assert httpx.get(server.url + "/").status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0, server.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/health/live", timeout=1)
    log = server.output()
    assert '"logger":"service.access"' in log and '"route":"/v1/predict"' in log
    assert "jane" not in log.lower()  # client file names never reach the log


def test_sigterm_drains_in_flight_work(slow_model_dir: Path, start_server) -> None:
    server = start_server(
        slow_model_dir,
        MODEL_VARIANT="fp32",
        BATCHING="off",
        INFER_THREADS="1",
        DRAIN_GRACE_S="0.6",
        DRAIN_TIMEOUT_S="20",
    )
    server.wait_ready()
    results: list[int] = []
    body = png_bytes(200)

    def call() -> None:
        results.append(httpx.post(server.url + "/v1/predict", content=body, timeout=30).status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.15)  # all six are in flight: about 0.8 s of inference queued
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    ready = httpx.get(server.url + "/health/ready", timeout=5)
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 503
    for t in threads:
        t.join(30)
    assert results == [200] * 6
    assert server.proc.wait(20) == 0, server.output()
    assert '"msg":"stopped"' in server.output()
