"""A light closed- and open-loop HTTP/1.1 client: raw asyncio streams, keep-alive, pre-built requests.

Not httpx: on a 2-CPU machine the load generator shares the CPUs with the server, so it must cost
little per request. It reports every transport failure (reset, refused, closed early, timeout) as
such, which is what overload and drain checks count. Closed-loop: a slow answer delays that worker's
next request (latency under this concurrency, not under a fixed arrival rate); open-loop: requests
arrive at a set rate whatever the answers do.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class Result:
    status: int  # 0 when no response came back
    latency: float
    started: float  # seconds since the run began
    error: str = ""  # transport failure: reset | refused | closed | timeout | ...
    retry_after: str | None = None
    content_type: str = ""
    body: bytes = b""


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def encode(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(self.body)}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def image_call(data: bytes, path: str = "/v1/predict", content_type: str = "image/png") -> Call:
    return Call("POST", path, data, (("Content-Type", content_type),))


class Client:
    """Keep-alive HTTP/1.1 connections to one server, opened on demand and reused when idle.

    Like httpx and browsers, an idle connection is dropped after `keepalive_s` (kept under the
    server's KEEPALIVE_S, 5 s by default) or once the server has closed it; reusing one the server
    closed a moment before is the keep-alive race every client must handle, not a server fault.
    """

    def __init__(
        self,
        port: int,
        timeout: float = 30.0,
        keepalive_s: float = 4.0,
        pool: int | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        """`tls`: speak HTTPS with this context; `server_name`: the Host (and TLS SNI) to ask for, still on
        127.0.0.1 (a proxy's site name)."""
        self.port, self.timeout, self.keepalive_s = port, timeout, keepalive_s
        self.host = f"{server_name or '127.0.0.1'}:{port}"
        self._connect = functools.partial(
            asyncio.open_connection, "127.0.0.1", port, ssl=tls, server_hostname=server_name if tls else None
        )
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        # At most `pool` connections, as a proxy's upstream pool: further calls wait their turn (and
        # that wait counts in their latency). None: a new connection whenever none is idle.
        self._slots = asyncio.Semaphore(pool) if pool else None
        self.opened = 0

    def _reusable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.perf_counter()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < self.keepalive_s and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.transport.abort()
        return None

    async def call(self, call: Call, t0: float = 0.0) -> Result:
        if self._slots is None:
            return await self._call(call, t0, time.perf_counter())
        started = time.perf_counter()
        async with self._slots:
            return await self._call(call, t0, started)

    async def _call(self, call: Call, t0: float, started: float) -> Result:
        conn = self._reusable()
        try:
            if conn is None:
                conn = await asyncio.wait_for(self._connect(), self.timeout)
                self.opened += 1
            reader, writer = conn
            writer.write(call.encode(self.host))
            status, headers, body = await asyncio.wait_for(read_response(reader), self.timeout)
        except Exception as exc:  # every transport failure is a finding, named by its type
            if conn is not None:
                conn[1].transport.abort()
            return Result(0, time.perf_counter() - started, started - t0, _error_name(exc))
        if headers.get("connection", "").lower() == "close":
            writer.transport.abort()
        else:
            self._idle.append((reader, writer, time.perf_counter()))
        return Result(
            status,
            time.perf_counter() - started,
            started - t0,
            retry_after=headers.get("retry-after"),
            content_type=headers.get("content-type", ""),
            body=body,
        )

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.transport.abort()
        self._idle.clear()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.read()
    return status, headers, body


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__


async def closed_loop(
    client: Client, calls: Callable[[int], Call], workers: int, seconds: float, max_requests: int | None = None
) -> list[Result]:
    """`workers` callers, each sending its next request when the last one answers, for `seconds` or
    until `max_requests` were sent; call i is `calls(i)`, numbered across workers."""
    t0 = time.perf_counter()
    end = t0 + seconds
    results: list[Result] = []
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while time.perf_counter() < end and (max_requests is None or sent < max_requests):
            i, sent = sent, sent + 1
            results.append(await client.call(calls(i), t0))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return results


async def open_loop(
    client: Client, calls: Callable[[int], Call], rate: Callable[[float], float], seconds: float
) -> list[Result]:
    """Requests arrive at `rate(t)` per second whatever the answers do (that is what overload is)."""
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[Result]] = []
    next_at, i = 0.0, 0
    while next_at < seconds:
        delay = t0 + next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.call(calls(i), t0)))
        i += 1
        next_at += 1.0 / max(rate(next_at), 0.1)
    return list(await asyncio.gather(*tasks))


@dataclass
class Tally:
    statuses: dict[int, int] = field(default_factory=dict)  # answered requests by HTTP status
    errors: dict[str, int] = field(default_factory=dict)  # requests with no answer, by transport failure

    @classmethod
    def of(cls, results: Iterable[Result]) -> Tally:
        tally = cls()
        for r in results:
            if r.error:
                tally.errors[r.error] = tally.errors.get(r.error, 0) + 1
            else:
                tally.statuses[r.status] = tally.statuses.get(r.status, 0) + 1
        return tally

    def counts(self) -> dict[str, int]:
        """Statuses and transport failures in one table, keyed by name ("200", "503", "timeout")."""
        merged = {str(status): n for status, n in self.statuses.items()} | self.errors
        return dict(sorted(merged.items()))
