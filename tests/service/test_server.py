"""`python -m service` as a real process: start-up checks, time to ready, SIGTERM draining."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.process import REPO
from tests.service.svc_kit import png_bytes


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
    finished: list[float] = []
    body = png_bytes(200)

    def call() -> None:
        results.append(httpx.post(server.url + "/v1/predict", content=body, timeout=30).status_code)
        finished.append(time.perf_counter())

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.15)  # all six are in flight: about 0.8 s of inference queued
    server.proc.send_signal(signal.SIGTERM)
    signalled = time.perf_counter()
    time.sleep(0.05)
    ready = httpx.get(server.url + "/health/ready", timeout=5)
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert httpx.get(server.url + "/v2/health/ready", timeout=5).status_code == 503
    for t in threads:
        t.join(30)
    assert results == [200] * 6
    assert sum(t > signalled for t in finished) >= 3  # most of the work finished after SIGTERM
    assert server.proc.wait(20) == 0, server.output()
    assert '"msg":"stopped"' in server.output()


def _raw(port: int, payload: bytes, wait: float = 0.0) -> bytes:
    """Send raw bytes, optionally stall, and return whatever the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        time.sleep(wait)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b'"request_id"' in b"".join(chunks):
                break
        return b"".join(chunks)


def test_slow_and_oversized_clients_are_cut_off(model_dir: Path, start_server) -> None:
    server = start_server(model_dir, REQUEST_TIMEOUT_S="0.5", MAX_CONNECTIONS="3")
    server.wait_ready()
    # A body that stops arriving: 408 in our JSON format, within the request deadline.
    started = time.perf_counter()
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
    answer = _raw(server.port, head + b"\x89PNG\r\n\x1a\n")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"error":"request_timeout"' in answer and time.perf_counter() - started < 5
    # Headers that never end are not buffered past 16 KiB (connections.MAX_HEADER_BYTES): the server gives up.
    endless = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 40_000
    answer = _raw(server.port, endless)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    # Past MAX_CONNECTIONS requests in progress, the next one gets our JSON 503 at once.
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=2) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(head)  # each one is a request in progress, waiting for its body
        answers = []
        for sock in held:
            try:
                answers.append(sock.recv(200))
            except TimeoutError:
                answers.append(b"")
        assert sum(a.startswith(b"HTTP/1.1 503") for a in answers) >= 1, answers
    finally:
        for sock in held:
            sock.close()


def _first_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and Content-Length body, however the server's writes were split), or b""
    once the server has closed the connection."""
    answer = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                return answer
    except (ConnectionResetError, TimeoutError):
        return answer


def test_header_deadline_and_size_hold_on_keep_alive_connections(model_dir: Path, start_server) -> None:
    server = start_server(model_dir, HEADER_TIMEOUT_S="0.5", KEEPALIVE_S="5")
    server.wait_ready()
    probe = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(probe + b"\r\n")
        assert _first_answer(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.8)  # an idle keep-alive pause past the header deadline is KEEPALIVE_S's to judge
        sock.sendall(probe)  # the next request's headers start and never finish
        started = time.perf_counter()
        assert _first_answer(sock) == b""  # closed by the header deadline, counted from that first byte
        assert 0.3 < time.perf_counter() - started < 3
    # Request line + headers: up to 16 KiB are served, past it the request is a 400 and the socket closes.
    for junk, status in ((15_000, b"200"), (17_000, b"400")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(probe + b"X-Junk: " + b"a" * junk + b"\r\n\r\n")
            assert _first_answer(sock).startswith(b"HTTP/1.1 " + status), junk


def test_a_client_that_leaves_mid_body_is_not_a_server_error(model_dir: Path, start_server) -> None:
    server = start_server(model_dir, LOG_LEVEL="INFO")
    server.wait_ready()
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head + b"\x89PNG\r\n\x1a\n")
            time.sleep(0.2)  # the handler is reading the body when the client goes
    assert httpx.post(server.url + "/v1/predict", files={"file": png_bytes()}).status_code == 200
    deadline = time.monotonic() + 5
    while 'status="499"' not in (metrics := httpx.get(server.url + "/metrics").text) and time.monotonic() < deadline:
        time.sleep(0.05)
    counted = [x for x in metrics.splitlines() if x.startswith("chestnet_http_requests_total{") and "/v1/predict" in x]
    assert any('status="499"' in x for x in counted), counted
    assert not any('status="500"' in x for x in counted), counted
    assert 'chestnet_errors_total{code="client_disconnected"} 3.0' in metrics
    assert '"level":"ERROR"' not in server.output() and "internal_error" not in server.output()


def test_request_bodies_in_memory_are_bounded(model_dir: Path, start_server) -> None:
    server = start_server(model_dir, MAX_BODY_BYTES="100000", MAX_INFLIGHT_BODY_BYTES="150000", REQUEST_TIMEOUT_S="5")
    server.wait_ready()
    image = png_bytes()
    big_body = image + b"\0" * (100_000 - len(image))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as holder:
        # A request in progress whose declared body takes 100000 of the 150000 bytes.
        head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
        holder.sendall(head)
        time.sleep(0.3)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            headers = {"Content-Type": "image/png"}
            refused = client.post("/v1/predict", content=big_body, headers=headers)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
            assert refused.json()["error"] == "overloaded" and "bodies" in refused.json()["detail"]
            # Its body was dropped unread, and the same connection goes on serving.
            assert client.get("/v1/model").status_code == 200
            # A chunked body (size unknown) reserves MAX_BODY_BYTES, so it does not fit either.
            chunked = client.post("/v1/predict", content=iter([big_body[:50_000], big_body[50_000:]]), headers=headers)
            assert chunked.status_code == 503, chunked.text
            # A small image still fits beside the held body.
            assert client.post("/v1/predict", content=image, headers=headers).status_code == 200
        holder.sendall(big_body)  # the held request completes and gives its reservation back
        assert holder.recv(65536).startswith(b"HTTP/1.1 ")
    after = httpx.post(server.url + "/v1/predict", content=big_body, headers={"Content-Type": "image/png"}, timeout=10)
    assert after.status_code != 503, after.text


def test_numpy_blas_runs_one_thread_in_the_service() -> None:
    """OpenBLAS threads spinning after the OOD gate's matrix products took the inference cores (see
    service/__main__.py); the service sets one thread before numpy loads, and an explicit value wins."""
    code = "import service.__main__, os, numpy; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "1", run.stderr
    env["OPENBLAS_NUM_THREADS"] = "2"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "2", run.stderr
