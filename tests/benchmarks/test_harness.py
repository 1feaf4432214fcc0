"""The harness the benchmarks and the test suites share: the load client counts every answer and failure,
the percentile is the nearest rank, a server process reports its readiness and its failures."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from benchmarks.harness.client import Call, Client, Tally, closed_loop
from benchmarks.harness.process import ServerFailed, ServerProcess, rss_mb
from benchmarks.harness.stats import nearest_rank


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # any order
    assert [nearest_rank(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert nearest_rank([7.0], 99) == 7.0 and nearest_rank([1.0, 2.0], 0) == 1.0
    assert nearest_rank([], 50) != nearest_rank([], 50)  # nan


def test_client_counts_answers_statuses_and_timeouts() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                if body == b"hang":
                    await asyncio.sleep(1)  # past the client's timeout: it gives up and reconnects
                status = b"503 Service Unavailable" if body == b"busy" else b"200 OK"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def scenario():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        client = Client(server.sockets[0].getsockname()[1], timeout=0.2)
        calls = [Call("POST", "/", body) for body in (b"fine", b"busy", b"hang")]
        results = await closed_loop(client, lambda i: calls[i % 3], workers=1, seconds=5, max_requests=6)
        client.close()
        server.close()
        await server.wait_closed()
        return results

    results = asyncio.run(scenario())
    assert len(results) == 6
    assert Tally.of(results).counts() == {"200": 2, "503": 2, "timeout": 2}
    assert [r.body for r in results if not r.error] == [b"ok"] * 4


def test_server_process_reports_ready_and_failure(tmp_path: Path) -> None:
    serve = (
        "import http.server as h, sys; h.test(h.SimpleHTTPRequestHandler, port=int(sys.argv[-1]), bind=sys.argv[-3])"
    )
    server = ServerProcess([sys.executable, "-c", serve], {}, tmp_path / "ok.log", name="stdlib", ready_path="/")
    try:
        assert 0 < server.wait_ready(20) < 20 and server.alive_and_ready() and rss_mb(server.pid) > 1
    finally:
        server.stop(graceful=True)
    assert not server.alive()
    dead = ServerProcess([sys.executable, "-c", "raise SystemExit(3)"], {}, tmp_path / "dead.log")
    with pytest.raises(ServerFailed, match="exited with 3"):
        dead.wait_ready(20)
    dead.stop()
