"""A lean closed-loop HTTP/1.1 load client: asyncio streams, keep-alive, pre-built request bytes.

Each of `concurrency` connections sends a request, reads the whole answer, records its latency and
status, and sends the next, until the request cap or the time cap is reached. It is deliberately
small (no HTTP library, no per-request allocation beyond the read) so that it takes little of the
CPU it shares with the server; its CPU time is measured and reported beside the server's.
Closed-loop: a slow answer delays that connection's next request (the numbers are latency under
this concurrency, not under a fixed arrival rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    samples: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds) per answered request
    failures: Counter = field(default_factory=Counter)  # "timeout", "connection_error": no answer at all
    wall_s: float = 0.0

    def statuses(self) -> dict[str, int]:
        counts = Counter(str(status) for status, _ in self.samples)
        counts.update(self.failures)
        return dict(sorted(counts.items()))


def build_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nAccept: application/json\r\n\r\n"
    )
    return head.encode() + body


async def drive(
    host: str,
    port: int,
    requests: list[bytes],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    timeout_s: float = 30.0,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Tally:
    """Send up to `max_requests` (cycling through `requests`) for at most `max_seconds`; over TLS with `tls`."""
    tally = Tally()
    ids = itertools.count()
    started = time.perf_counter()
    deadline = started + max_seconds
    connect = functools.partial(asyncio.open_connection, host, port, ssl=tls, server_hostname=server_hostname)
    await asyncio.gather(
        *(_connection(connect, requests, ids, max_requests, deadline, timeout_s, tally) for _ in range(concurrency))
    )
    tally.wall_s = time.perf_counter() - started
    return tally


async def _connection(connect, requests, ids, max_requests, deadline, timeout_s, tally: Tally) -> None:
    conn = None
    while time.perf_counter() < deadline:
        n = next(ids)
        if n >= max_requests:
            break
        try:
            if conn is None:
                conn = await asyncio.wait_for(connect(), timeout_s)
            sent = time.perf_counter()
            async with asyncio.timeout(timeout_s):
                status, keep = await _exchange(*conn, requests[n % len(requests)])
            tally.samples.append((status, time.perf_counter() - sent))
        except TimeoutError:
            tally.failures["timeout"] += 1
            keep = False
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.failures["connection_error"] += 1
            keep = False
        if not keep and conn is not None:
            await _close(conn[1])
            conn = None
    if conn is not None:
        await _close(conn[1])


async def _close(writer: asyncio.StreamWriter) -> None:
    # Awaited, so that a TLS connection's goodbye is done before the event loop ends.
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bool]:
    """One request/response on an open connection: (status, whether the connection stays open)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError("response without Content-Length")
    end = lower.index(b"\r\n", start + 2)
    await reader.readexactly(int(lower[start + 17 : end]))
    return status, b"\r\nconnection: close" not in lower
