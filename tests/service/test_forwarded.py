"""The access log's client address: the peer, or what a proxy named in FORWARDED_ALLOW_IPS passed on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.harness.process import ServerProcess

SPOOF = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def access_lines(server: ServerProcess, count: int) -> list[dict]:
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(x) for x in server.output().splitlines() if x.startswith("{") and '"request"' in x]
        lines = [x for x in lines if x.get("logger") == "service.access"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_without_a_trusted_proxy_the_peer_is_the_client(
    start_server: Callable[..., ServerProcess], model_dir: Path
) -> None:
    server = start_server(model_dir, LOG_LEVEL="INFO")
    server.wait_ready()
    assert httpx.get(server.url + "/v1/model", headers=SPOOF).status_code == 200
    (line,) = access_lines(server, 1)
    assert line["client"] == "127.0.0.1"  # the forged header is ignored


def test_a_trusted_proxy_passes_the_client_address_on(
    start_server: Callable[..., ServerProcess], model_dir: Path
) -> None:
    server = start_server(model_dir, FORWARDED_ALLOW_IPS="127.0.0.0/8")
    server.wait_ready()
    assert httpx.get(server.url + "/v1/model", headers=SPOOF).status_code == 200
    assert httpx.get(server.url + "/v1/model").status_code == 200
    first, second = access_lines(server, 2)
    assert first["client"] == "203.0.113.7" and second["client"] == "127.0.0.1"
    settings = next(json.loads(x) for x in server.output().splitlines() if '"model verified"' in x)["settings"]
    assert settings["forwarded_allow_ips"] == ["127.0.0.0/8"]
