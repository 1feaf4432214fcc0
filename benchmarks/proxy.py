"""Caddy with the committed deploy/caddy/Caddyfile, in front of service processes on loopback.

The same file compose's `tls` profile runs; only its environment differs: loopback ports instead of
80/443, the upstreams given here, `localhost` (so Caddy's internal CA signs the certificate) and a
private data folder, whose root certificate a client trusts with `ca_cert`.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from benchmarks.harness.process import free_port

REPO = Path(__file__).resolve().parents[1]
CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"
HOST = "localhost"  # the site name; every connection goes to 127.0.0.1


class ProxyFailed(RuntimeError):
    pass


def caddy_binary() -> str | None:
    return shutil.which("caddy")


class Caddy:
    """`caddy run` on the committed Caddyfile; `env` adds or overrides its variables."""

    def __init__(self, upstreams: list[str], work: Path, **env: str) -> None:
        binary = caddy_binary()
        if binary is None:
            raise ProxyFailed("caddy is not installed (deploy/ci_tools.sh installs Debian's package)")
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.https_port, self.http_port = free_port(), free_port()
        self.log = work / "caddy.log"
        full = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "XDG_DATA_HOME": str(work / "data"),
            "XDG_CONFIG_HOME": str(work / "config"),
            "DOMAIN": HOST,
            "BIND_HOST": "127.0.0.1",
            "HTTPS_PORT": str(self.https_port),
            "HTTP_PORT": str(self.http_port),
            "CADDY_ADMIN": "off",
            "UPSTREAMS": " ".join(upstreams),
            **env,
        }
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [binary, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
            cwd=work,
            env=full,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    @property
    def ca_cert(self) -> Path:
        return self.work / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def curl(self, *args: str) -> list[str]:
        """The start of a curl command line that reaches this proxy and trusts its CA."""
        return ["curl", "--silent", "--show-error", "--cacert", str(self.ca_cert), "--resolve", self.resolve, *args]

    @property
    def resolve(self) -> str:
        return f"{HOST}:{self.https_port}:127.0.0.1"

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Until /health/ready answers 200 through the proxy over TLS (the internal CA trusted), so that
        the certificate exists and the health checks have found a ready upstream; returns the seconds."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise ProxyFailed(f"caddy exited with {self.proc.returncode}: {self.tail()}")
            if self.ca_cert.is_file() and self._ready():
                return time.perf_counter() - started
            time.sleep(0.05)
        raise ProxyFailed(f"caddy did not answer ready over TLS within {timeout_s:.0f} s: {self.tail()}")

    def _ready(self) -> bool:
        conn = http.client.HTTPSConnection(HOST, self.https_port, timeout=2, context=self.ssl_context())
        try:
            conn.sock = socket.create_connection(("127.0.0.1", self.https_port), timeout=2)
            conn.sock = self.ssl_context().wrap_socket(conn.sock, server_hostname=HOST)
            conn.request("GET", "/health/ready")
            return conn.getresponse().status == 200
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
