"""deploy/caddy/Caddyfile for real: Debian's caddy in front of a service process, driven with curl over
HTTPS that trusts only Caddy's internal CA. Predict, health, metrics, the HTTP redirect, HSTS, the
client address in the service's log, a body over the limit, and slow clients."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.harness.process import ServerProcess
from benchmarks.proxy import HOST, Caddy, caddy_binary
from service.settings import Settings
from tests.service.svc_kit import png_bytes
from tests.service.svc_models import write_model_dir

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = (ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
READ_HEADER_S, READ_BODY_S = 1.0, 2.0
CLIENT = "127.0.0.2"  # curl's source address: loopback, but not the proxy's own

pytestmark = pytest.mark.skipif(
    caddy_binary() is None or shutil.which("curl") is None,
    reason="caddy or curl is not installed (deploy/ci_tools.sh installs Debian's caddy)",
)


@dataclass
class Edge:
    caddy: Caddy
    server: ServerProcess
    png: Path

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.caddy.curl(*args), capture_output=True, text=True, timeout=30)

    def access(self) -> list[dict]:
        lines = (json.loads(x) for x in self.server.output().splitlines() if x.startswith("{"))
        return [x for x in lines if x.get("logger") == "service.access"]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    work = tmp_path_factory.mktemp("tls-proxy")
    model_dir = write_model_dir(work / "models", "binary")
    env = {
        "PATH": "/usr/bin:/bin",
        "MODEL_DIR": str(model_dir),
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",  # the proxy, and no one else
    }
    server = ServerProcess([sys.executable, "-m", "service"], env, work / "service.log")
    server.wait_ready()
    caddy = Caddy(
        [f"127.0.0.1:{server.port}"],
        work / "caddy",
        READ_HEADER_TIMEOUT=f"{READ_HEADER_S:g}s",
        READ_BODY_TIMEOUT=f"{READ_BODY_S:g}s",
        METRICS_ALLOW="127.0.0.1/32",
    )
    try:
        caddy.wait_ready()
        png = work / "scan.png"
        png.write_bytes(png_bytes(240))
        yield Edge(caddy, server, png)
    finally:
        caddy.stop()
        server.stop()


def test_predict_over_https_with_the_internal_ca(edge: Edge, tmp_path: Path) -> None:
    head, body = tmp_path / "head", tmp_path / "body"
    done = edge.curl(
        "-F", f"file=@{edge.png}", "-D", str(head), "-o", str(body), "-w", "%{http_code} %{time_total}",
        edge.caddy.url + "/v1/predict",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status, seconds = done.stdout.split()
    assert status == "200" and json.loads(body.read_text())["label"] == "adenocarcinoma"
    headers = head.read_text().lower()
    assert "strict-transport-security: max-age=31536000" in headers
    assert "server:" not in headers and "x-request-id:" in headers  # the service's own headers pass through
    print(f"predict through the proxy: {float(seconds) * 1000:.1f} ms (a new connection: TLS handshake included)")


def test_the_service_logs_the_real_client_not_the_proxy_nor_a_forged_header(edge: Edge) -> None:
    for request_id, extra in (("fwd-1", ["-H", "X-Forwarded-For: 203.0.113.9"]), ("fwd-2", [])):
        done = edge.curl(
            "--interface", CLIENT, "-o", "/dev/null", "-H", f"X-Request-ID: {request_id}", *extra,
            edge.caddy.url + "/v1/model",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    time.sleep(0.2)
    lines = {x["request_id"]: x for x in edge.access()}
    assert lines["fwd-1"]["client"] == CLIENT and lines["fwd-2"]["client"] == CLIENT


def test_health_and_metrics_through_the_proxy(edge: Edge) -> None:
    for path in ("/health/live", "/health/ready", "/v2/health/ready"):
        done = edge.curl("-o", "/dev/null", "-w", "%{http_code}", edge.caddy.url + path)
        assert done.stdout == "200", (path, done.stderr)
    metrics = edge.curl(edge.caddy.url + "/metrics")  # from 127.0.0.1, which METRICS_ALLOW names
    assert metrics.returncode == 0 and "chestnet_http_requests_total" in metrics.stdout
    outside = edge.curl("--interface", CLIENT, "-o", "/dev/null", "-w", "%{http_code}", edge.caddy.url + "/metrics")
    assert outside.stdout == "403"


def test_plain_http_redirects_to_https(edge: Edge) -> None:
    done = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", f"Host: {HOST}"]
        + [f"http://127.0.0.1:{edge.caddy.http_port}/v1/model?x=1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    # Caddy writes the public port (443) into the redirect, not the loopback port it listens on here.
    assert done.stdout == f"308 https://{HOST}/v1/model?x=1", done.stderr


def test_a_body_over_the_limit_is_refused_by_the_proxy(edge: Edge, tmp_path: Path) -> None:
    limit = Settings().max_body_bytes
    assert f"{{$MAX_BODY_BYTES:{limit}}}" in CADDYFILE  # the proxy's default is the service's own limit
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (limit - 3))
    seen = len(edge.access())
    # HTTP/1.1: over HTTP/2 the early 413 comes with a reset of the stream that curl reports as an error.
    done = edge.curl(
        "--http1.1", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "-H", "Content-Type: image/png",
        "--data-binary", f"@{big}", edge.caddy.url + "/v1/predict",
    )  # fmt: skip
    status, seconds = done.stdout.split()
    assert status == "413"
    time.sleep(0.2)
    assert len(edge.access()) == seen  # refused before it reached the service
    small = edge.curl(
        "-o", "/dev/null", "-w", "%{http_code}", "-F", f"file=@{edge.png}", edge.caddy.url + "/v1/predict"
    )
    assert small.stdout == "200" and len(edge.access()) == seen + 1
    print(f"413 for a {limit + 1}-byte body in {float(seconds) * 1000:.0f} ms")


def test_credentials_stay_out_of_the_proxy_log(edge: Edge) -> None:
    key = "k" * 24 + "-secret-marker"
    done = edge.curl("-o", "/dev/null", "-H", f"X-API-Key: {key}", "-H", f"Authorization: Bearer {key}", edge.caddy.url)
    assert done.returncode == 0
    time.sleep(0.2)
    log = edge.caddy.log.read_text()
    assert key not in log and '"uri":"/"' in log.replace(" ", "")


def tls_socket(edge: Edge) -> ssl.SSLSocket:
    context = edge.caddy.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    sock = socket.create_connection(("127.0.0.1", edge.caddy.https_port), timeout=10)
    return context.wrap_socket(sock, server_hostname=HOST)


def closed_within(conn: ssl.SSLSocket, trickle: bytes, limit_s: float) -> float:
    """Send `trickle` a byte every 0.1 s until the proxy closes the connection; the seconds it took."""
    started = time.monotonic()
    try:
        for byte in trickle:
            conn.sendall(bytes([byte]))
            time.sleep(0.1)
            if time.monotonic() - started > limit_s:
                break
        conn.settimeout(limit_s)
        while conn.recv(4096):
            pass
    except (OSError, ssl.SSLError):
        pass
    return time.monotonic() - started


def test_slow_clients_are_cut_by_the_proxy_and_never_reach_the_service(edge: Edge) -> None:
    seen = len(edge.access())
    with tls_socket(edge) as headers, tls_socket(edge) as body:
        headers.sendall(b"GET /v1/model HTTP/1.1\r\n")
        body.sendall(f"POST /v1/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 4096\r\n\r\n".encode())
        # While both trickle, the proxy still answers everyone else at once.
        started = time.monotonic()
        done = edge.curl(
            "-o", "/dev/null", "-w", "%{http_code}", "-F", f"file=@{edge.png}", edge.caddy.url + "/v1/predict"
        )
        assert done.stdout == "200" and time.monotonic() - started < 2
        header_s = closed_within(headers, b"X-Slow: " + b"a" * 200, limit_s=10)
        body_s = closed_within(body, b"\0" * 200, limit_s=10)
    assert header_s < READ_HEADER_S + 1.5, header_s
    assert body_s < READ_BODY_S + 1.5, body_s
    assert len(edge.access()) == seen + 1  # the service saw only the fast request
    print(f"slow headers cut after {header_s:.1f} s, a slow body after {body_s:.1f} s ({READ_HEADER_S}, {READ_BODY_S})")


def test_slow_upload_with_curl_is_cut_at_the_read_deadline(edge: Edge, tmp_path: Path) -> None:
    blob = tmp_path / "slow.png"
    blob.write_bytes(png_bytes(200) + b"\0" * 200_000)
    seen = len(edge.access())
    done = edge.curl(
        "--http1.1", "--limit-rate", "20k", "-o", "/dev/null", "-w", "%{time_total} %{size_upload}",
        "-H", "Content-Type: image/png", "--data-binary", f"@{blob}", edge.caddy.url + "/v1/predict",
    )  # fmt: skip
    seconds, sent = (float(x) for x in done.stdout.split())
    assert seconds < READ_BODY_S + 1.5 and sent < blob.stat().st_size
    assert len(edge.access()) == seen


def test_caddyfile_is_formatted_and_pinned_to_its_variables() -> None:
    done = subprocess.run([caddy_binary(), "fmt", str(ROOT / "deploy" / "caddy" / "Caddyfile")], capture_output=True)
    assert done.returncode == 0 and done.stdout.decode() == CADDYFILE
    variables = set(re.findall(r"\{\$(\w+)", CADDYFILE)) - {"VAR"}  # the comment's {$VAR:default}
    assert variables == {
        "CADDY_ADMIN", "HTTP_PORT", "HTTPS_PORT", "BIND_HOST", "READ_HEADER_TIMEOUT", "READ_BODY_TIMEOUT",
        "DOMAIN", "HSTS_MAX_AGE", "MAX_BODY_BYTES", "METRICS_ALLOW", "UPSTREAMS", "HEALTH_INTERVAL",
    }  # fmt: skip


@pytest.mark.parametrize("domain", ["localhost", "chest.example.org"])
def test_caddyfile_adapts_and_a_broken_one_does_not(domain: str, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DOMAIN": domain}

    def adapt(text: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "Caddyfile").write_text(text)
        command = [caddy_binary(), "adapt", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)

    good = adapt(CADDYFILE)
    assert good.returncode == 0, good.stderr
    config = json.loads(good.stdout)
    server = config["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == ["0.0.0.0:443"] and server["routes"][0]["match"][0]["host"] == [domain]
    assert adapt(CADDYFILE.replace("lb_try_duration", "lb_try_durration")).returncode != 0
    assert adapt(CADDYFILE.replace("max_size {$MAX_BODY_BYTES:8388608}", "max_size lots")).returncode != 0
