"""Slow clients do not starve normal ones. The limits that make it so (service/web/connections.py):
HEADER_TIMEOUT_S closes a connection whose request headers are late (slow headers, silent sockets);
REQUEST_TIMEOUT_S answers a body that stops arriving with 408; KEEPALIVE_S closes idle keep-alive
connections; MAX_CONNECTIONS bounds requests in progress (not sockets) with a JSON 503, probes exempt."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.client import Client, image_call
from tests.reliability.corpus import png
from tests.reliability.scenarios import _until_closed, slow_clients

pytestmark = pytest.mark.slow


def test_slowloris_does_not_starve_normal_requests(serve, model_dir: Path) -> None:
    header_s, request_s = 1.0, 1.5
    proc = serve(
        model_dir,
        HEADER_TIMEOUT_S=str(header_s),
        REQUEST_TIMEOUT_S=str(request_s),
        KEEPALIVE_S="1",
        MAX_CONNECTIONS="16",
    )
    # Four times MAX_CONNECTIONS sockets trickling headers, plus silent sockets: none of them counts.
    result = slow_clients(
        proc, image_call(png()), slow_headers=64, slow_bodies=6, idle=32, seconds=4.0, hold_limit_s=15.0
    )
    print(result)
    normal = result["normal"]
    assert normal["tally"] == {"statuses": {200: normal["count"]}, "errors": {}}, result
    assert normal["count"] >= 20 and normal["p95_ms"] < 500, result
    for kind, limit in (("slow_headers", header_s), ("idle", header_s), ("slow_bodies", request_s)):
        group = result[kind]
        assert group["closed_by_server"] == group["count"], (kind, group)
        assert group["max_held_s"] <= limit + 1.5, (kind, group)
    assert result["slow_headers"]["statuses"] == [0]  # closed without an answer
    assert result["slow_bodies"]["statuses"] == [408]
    assert result["worker_alive"]


def test_requests_past_the_limit_get_json_503_and_probes_stay_up(serve, model_dir: Path) -> None:
    proc = serve(model_dir, REQUEST_TIMEOUT_S="2", MAX_CONNECTIONS="4")
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"

    async def run() -> tuple[list[dict], list, list]:
        holders = [asyncio.create_task(_until_closed(proc.port, head, b"\0", 0.3, 10.0)) for _ in range(4)]
        await asyncio.sleep(0.5)  # four bodies arriving slowly: MAX_CONNECTIONS requests in progress
        client = Client(proc.port)
        during = [await client.call(image_call(png())) for _ in range(3)]
        probes = [
            await asyncio.to_thread(httpx.get, proc.url + path, timeout=5)
            for path in ("/health/live", "/health/ready", "/metrics")
        ]
        held = list(await asyncio.gather(*holders))
        after = [await client.call(image_call(png())) for _ in range(3)]
        client.close()
        return held, during + [None] + after, probes

    held, calls, probes = asyncio.run(run())
    during, after = calls[:3], calls[4:]
    for r in during:
        assert r.status == 503 and r.retry_after == "1" and r.content_type == "application/json", r
        assert b'"error":"overloaded"' in r.body
    assert [p.status_code for p in probes] == [200, 200, 200]
    assert [h["status"] for h in held] == [408] * 4
    assert [r.status for r in after] == [200] * 3


def test_a_slow_json_body_to_the_oip_route_gets_408(serve, model_dir: Path) -> None:
    """The OIP body is read under the same deadline as uploads (Litestar's own body parsing had none:
    a trickled JSON body held its request open for as long as the client liked)."""
    proc = serve(model_dir, REQUEST_TIMEOUT_S="1")
    head = (
        b"POST /v2/models/chest-cancer-net/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    held = asyncio.run(_until_closed(proc.port, head, b" ", 0.3, 10.0))
    assert held["status"] == 408 and held["held_s"] < 3.0, held
