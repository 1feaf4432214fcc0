"""Reliability scenarios against a running `python -m service`, each returning its figures as a dict.

The fast tests (tests/reliability/test_*.py) run them small and assert; long_run.py runs them long on
the real model and writes the figures to a report. Every scenario is bounded in requests and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median

import httpx

from benchmarks.harness.client import Call, Client, Result, Tally, closed_loop, open_loop, read_response
from benchmarks.harness.process import RssSampler, ServerProcess, free_port, service_env
from benchmarks.harness.stats import nearest_rank
from tests.reliability.corpus import Case
from tests.reliability.rel_kit import REPO, leaks_in

REFUSALS = {429, 503}


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def latency_summary(results: list[Result]) -> dict:
    values = [r.latency for r in results]
    return {f"p{q}_ms": _ms(nearest_rank(values, q)) for q in (50, 95, 99)} | {"max_ms": _ms(max(values, default=0))}


# --- bad inputs ----------------------------------------------------------------------------------


async def send_case(port: int, case: Case) -> tuple[int, dict, bytes, str]:
    """(status, headers, body, transport error) for one corpus case."""
    if case.raw is None:
        assert case.call is not None
        client = Client(port, timeout=30)
        try:
            r = await client.call(case.call)
        finally:
            client.close()
        return r.status, {"content-type": r.content_type}, r.body, r.error
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(case.raw)
        status, headers, body = await asyncio.wait_for(read_response(reader), 30)
        return status, headers, body, ""
    except Exception as exc:
        return 0, {}, b"", type(exc).__name__
    finally:
        writer.transport.abort()


def check_case(case: Case, status: int, headers: dict, body: bytes, error: str) -> list[str]:
    problems = []
    if error or status != case.expect:
        problems.append(f"got {status or error}, expected {case.expect}")
    if status >= 500:
        problems.append("a 5xx")
    text = body.decode("utf-8", "replace")
    if status >= 400 and case.json_error:
        try:
            parsed = json.loads(text)
            if set(parsed) != {"error", "detail", "request_id"}:
                problems.append(f"error body keys {sorted(parsed)}")
        except ValueError:
            problems.append(f"error body is not JSON: {text[:80]!r}")
    if status >= 400 and (leaks := leaks_in(text)):
        problems.append(f"error body leaks {leaks}: {text[:160]!r}")
    if status == 200 and case.size is not None:
        shown = json.loads(text)
        if (shown["image_width"], shown["image_height"]) != case.size:
            problems.append(f"upright size {shown['image_width']}x{shown['image_height']} != {case.size}")
    return problems


def run_corpus(proc: ServerProcess, corpus: list[Case]) -> dict:
    """Every case once, the worker's health checked after each; returns failures by case name."""
    pid = proc.pid
    failures: dict[str, list[str]] = {}
    statuses: dict[int, int] = {}
    for case in corpus:
        status, headers, body, error = asyncio.run(send_case(proc.port, case))
        statuses[status] = statuses.get(status, 0) + 1
        problems = check_case(case, status, headers, body, error)
        if not proc.alive_and_ready():
            problems.append("the worker did not survive")
        if problems:
            failures[case.name] = problems
    log = proc.output()
    return {
        "cases": len(corpus),
        "passed": len(corpus) - len(failures),
        "statuses": dict(sorted(statuses.items())),
        "failures": failures,
        "same_worker": proc.proc.poll() is None and proc.pid == pid,
        "unhandled_errors_logged": log.count('"msg":"unhandled error"'),
    }


# --- capacity and overload -----------------------------------------------------------------------


def sequential_latency(port: int, call: Call, count: int) -> list[Result]:
    async def run() -> list[Result]:
        client = Client(port)
        try:
            return [await client.call(call) for _ in range(count)]
        finally:
            client.close()

    return asyncio.run(run())


def measure_capacity(port: int, call: Call, workers: int, seconds: float) -> dict:
    """Closed loop: `workers` callers back to back; capacity = answered 200s per second."""

    async def run() -> list[Result]:
        client = Client(port)
        try:
            await closed_loop(client, lambda i: call, workers, 1.0)  # warm-up
            return await closed_loop(client, lambda i: call, workers, seconds)
        finally:
            client.close()

    results = asyncio.run(run())
    ok = [r for r in results if r.status == 200]
    return {
        "rps": round(len(ok) / seconds, 1),
        "workers": workers,
        "seconds": seconds,
        "tally": Tally.of(results).__dict__,
        **latency_summary(ok),
    }


def overload(
    port: int,
    call: Call,
    capacity_rps: float,
    factor: float,
    ramp_s: float,
    hold_s: float,
    baseline_ms: float,
    recover_limit_s: float,
) -> dict:
    """Open loop from 0.5x to `factor`x capacity over `ramp_s`, held `hold_s`; then time to recover."""

    def rate(t: float) -> float:
        return capacity_rps * (0.5 + (factor - 0.5) * min(1.0, t / ramp_s))

    async def run() -> list[Result]:
        client = Client(port, timeout=60)
        try:
            return await open_loop(client, lambda i: call, rate, ramp_s + hold_s)
        finally:
            client.close()

    results = asyncio.run(run())
    accepted = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status in REFUSALS]
    recovered_after = _recovery(port, call, baseline_ms, recover_limit_s)
    return {
        "offered": len(results),
        "offered_rps_peak": round(capacity_rps * factor, 1),
        "seconds": ramp_s + hold_s,
        "tally": Tally.of(results).__dict__,
        "accepted": len(accepted),
        "accepted_rps": round(len(accepted) / (ramp_s + hold_s), 1),
        "refused": len(refused),
        "refused_without_retry_after": sum(r.retry_after is None for r in refused),
        "other_statuses": sorted({r.status for r in results if r.status not in REFUSALS | {200} and not r.error}),
        "transport_errors": sum(bool(r.error) for r in results),
        "accepted_latency": latency_summary(accepted),
        "refused_latency": latency_summary(refused),
        "baseline_ms": round(baseline_ms, 1),
        "recovered_after_s": recovered_after,
    }


def _recovery(port: int, call: Call, baseline_ms: float, limit_s: float) -> float | None:
    """Seconds after the load stops until 5 requests in a row are back near the baseline latency."""
    target = max(2.0 * baseline_ms, baseline_ms + 25.0) / 1000.0
    started = time.perf_counter()
    streak = 0
    while time.perf_counter() - started < limit_s:
        r = sequential_latency(port, call, 1)[0]
        streak = streak + 1 if r.status == 200 and r.latency <= target else 0
        if streak >= 5:
            return round(time.perf_counter() - started, 2)
    return None


# --- decompression bombs -------------------------------------------------------------------------


def bomb_storm(proc: ServerProcess, calls: list[Call], total: int, concurrency: int) -> dict:
    """`total` bomb requests (cycling through `calls`) from `concurrency` callers at once; RSS sampled
    all the while."""
    before = proc.rss_mb()
    sent = iter(range(total))

    async def run() -> list[Result]:
        client = Client(proc.port, timeout=60)
        out: list[Result] = []

        async def worker() -> None:
            for i in sent:
                out.append(await client.call(calls[i % len(calls)]))

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            client.close()
        return out

    with RssSampler(proc.pid, every=0.02) as sampler:
        results = asyncio.run(run())
    tally = Tally.of(results)
    refused = sum(n for status, n in tally.statuses.items() if status in (413, 415, 422))
    return {
        "bombs": total,
        "kinds": len(calls),
        "concurrency": concurrency,
        "refused": refused,
        "tally": tally.__dict__,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(sampler.peak, 1),
        "rss_after_mb": round(proc.rss_mb(), 1),
        "worker_alive": proc.alive_and_ready(),
        "latency": latency_summary(results),
    }


# --- graceful shutdown ---------------------------------------------------------------------------


def drain(proc: ServerProcess, call: Call, in_flight: int, slow_uploads: int, exit_limit_s: float) -> dict:
    """`in_flight` requests (and `slow_uploads` bodies still arriving) when SIGTERM lands."""
    results: list[Result] = []
    upload_statuses: list[int | str] = []
    loop_ready = threading.Event()

    async def slow_upload() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
        writer.write(head + b"\x89PNG\r\n\x1a\n")
        try:
            status, _, _ = await asyncio.wait_for(read_response(reader), 60)
            upload_statuses.append(status)
        except Exception as exc:
            upload_statuses.append(type(exc).__name__)
        finally:
            writer.transport.abort()

    async def run() -> None:
        client = Client(proc.port, timeout=60)
        tasks = [asyncio.create_task(client.call(call)) for _ in range(in_flight)]
        uploads = [asyncio.create_task(slow_upload()) for _ in range(slow_uploads)]
        await asyncio.sleep(0.3)
        loop_ready.set()
        results.extend(await asyncio.gather(*tasks))
        await asyncio.gather(*uploads)
        client.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    loop_ready.wait(30)
    proc.terminate()
    signalled = time.perf_counter()
    ready_status, ready_after = None, None
    while time.perf_counter() - signalled < 2.0:
        try:
            ready_status = httpx.get(proc.url + "/health/ready", timeout=2).status_code
        except httpx.TransportError:
            ready_status = "refused"
        if ready_status != 200:
            ready_after = time.perf_counter() - signalled
            break
    try:
        code = proc.proc.wait(exit_limit_s + 30)
    except subprocess.TimeoutExpired:
        code = None
    exited_after = time.perf_counter() - signalled
    thread.join(60)
    tally = Tally.of(results)
    return {
        "in_flight": in_flight,
        "tally": tally.__dict__,
        "ok": tally.statuses.get(200, 0),
        "refused_503": tally.statuses.get(503, 0),
        "cut_off": sum(tally.errors.values()),
        "other": sum(n for s, n in tally.statuses.items() if s not in (200, 503)),
        "slow_uploads": upload_statuses,
        "ready_status_after_sigterm": ready_status,
        "ready_false_after_ms": None if ready_after is None else _ms(ready_after),
        "exit_code": code,
        "exit_after_s": round(exited_after, 2),
        "exit_limit_s": exit_limit_s,
    }


# --- slow clients --------------------------------------------------------------------------------


async def _until_closed(port: int, payload: bytes, trickle: bytes, every: float, limit: float) -> dict:
    """Open, send `payload`, then `trickle` every `every` s until the server answers or closes."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if payload:
        writer.write(payload)
    answer: bytes = b""
    try:
        while time.perf_counter() - started < limit:
            try:
                answer = await asyncio.wait_for(reader.read(4096), every)
                break  # an answer, or b"" when the server closed the connection
            except TimeoutError:
                if trickle:
                    writer.write(trickle)
                    await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    finally:
        writer.transport.abort()
    held = time.perf_counter() - started
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/1.1") else 0
    return {"held_s": held, "status": status, "timed_out": held >= limit}


def slow_clients(
    proc: ServerProcess, call: Call, slow_headers: int, slow_bodies: int, idle: int, seconds: float, hold_limit_s: float
) -> dict:
    """Slowloris sockets of three kinds while one normal client keeps calling."""

    async def run() -> tuple[list[dict], list[dict], list[dict], list[Result]]:
        header = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
        body_head = (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n"
        )
        attackers = (
            [_until_closed(proc.port, header, b"X-a: b\r\n", 0.5, hold_limit_s) for _ in range(slow_headers)],
            [_until_closed(proc.port, body_head, b"\0" * 64, 0.5, hold_limit_s) for _ in range(slow_bodies)],
            [_until_closed(proc.port, b"", b"", 0.5, hold_limit_s) for _ in range(idle)],
        )
        groups = [asyncio.gather(*group) for group in attackers]
        await asyncio.sleep(0.5)  # every slow socket is open before the normal client starts
        client = Client(proc.port, timeout=30)
        normal: list[Result] = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            normal.append(await client.call(call, t0))
            await asyncio.sleep(0.02)
        client.close()
        headers, bodies, idles = (list(g) for g in await asyncio.gather(*groups))
        return headers, bodies, idles, normal

    headers, bodies, idles, normal = asyncio.run(run())

    def group(items: list[dict]) -> dict:
        return {
            "count": len(items),
            "closed_by_server": sum(not i["timed_out"] for i in items),
            "max_held_s": round(max((i["held_s"] for i in items), default=0.0), 2),
            "statuses": sorted({i["status"] for i in items}),
        }

    return {
        "slow_headers": group(headers),
        "slow_bodies": group(bodies),
        "idle": group(idles),
        "normal": {"count": len(normal), "tally": Tally.of(normal).__dict__, **latency_summary(normal)},
        "worker_alive": proc.alive_and_ready(),
    }


# --- soak ----------------------------------------------------------------------------------------


def soak(
    proc: ServerProcess,
    call: Call,
    rate_rps: float,
    seconds: float,
    warmup_s: float,
    sample_every: float,
    pool: int = 32,
) -> dict:
    """A steady open-loop load through a pool of `pool` keep-alive connections (a proxy's upstream
    pool); RSS and open descriptors sampled throughout. The warm-up first runs `pool` callers back
    to back, so that the peak concurrency (and the memory it takes) is reached before measuring:
    what the drift then shows is growth with the number of requests, i.e. a leak."""
    samples: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.wait(sample_every):
            samples.append((time.perf_counter() - t0, proc.rss_mb(), proc.open_fds()))

    async def run(duration: float) -> list[Result]:
        client = Client(proc.port, timeout=60, pool=pool)
        try:
            return await open_loop(client, lambda i: call, lambda t: rate_rps, duration)
        finally:
            client.close()

    async def burst() -> None:
        client = Client(proc.port, timeout=60, pool=pool)
        try:
            await closed_loop(client, lambda i: call, pool, 15.0)
        finally:
            client.close()

    asyncio.run(burst())
    asyncio.run(run(warmup_s))
    time.sleep(1.0)
    fds_idle_before = proc.open_fds()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results = asyncio.run(run(seconds))
    stop.set()
    sampler.join(10)
    time.sleep(1.0)
    fds_idle_after = proc.open_fds()
    window = max(1, len(samples) // 10)  # first and last tenth of the run
    rss_start = median(s[1] for s in samples[:window])
    rss_end = median(s[1] for s in samples[-window:])
    tally = Tally.of(results)
    return {
        "rate_rps": round(rate_rps, 1),
        "seconds": seconds,
        "requests": len(results),
        "tally": tally.__dict__,
        "errors": len(results) - tally.statuses.get(200, 0),
        "latency": latency_summary([r for r in results if r.status == 200]),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_drift_pct": round(100.0 * (rss_end - rss_start) / rss_start, 2),
        "rss_max_mb": round(max(s[1] for s in samples), 1),
        "fds_idle_before": fds_idle_before,
        "fds_idle_after": fds_idle_after,
        "fds_during_min_max": [min(s[2] for s in samples), max(s[2] for s in samples)],
        "samples": len(samples),
        "pool": pool,
        "rss_mb_every_minute": [round(s[1], 1) for s in samples[:: max(1, round(60 / sample_every))]],
    }


# --- model faults at start -----------------------------------------------------------------------


def start_with(model_dir: Path, limit_s: float = 30.0, **env: str) -> dict:
    """Start `python -m service` on a broken model folder; watch its port until it exits."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=service_env(model_dir, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    port_opened = False
    try:
        while proc.poll() is None and time.perf_counter() - started < limit_s:
            with socket.socket() as sock:
                sock.settimeout(0.05)
                port_opened |= sock.connect_ex(("127.0.0.1", port)) == 0
            time.sleep(0.02)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = [line for line in err.splitlines() if line.strip()]
    return {
        "exit_code": proc.returncode,
        "seconds": round(time.perf_counter() - started, 2),
        "stderr_lines": lines,
        "stdout": out,
        "port_opened": port_opened,
    }


# --- fuzzing -------------------------------------------------------------------------------------

# Not run: positive_data_acceptance and negative_data_rejection judge a request by its schema alone,
# and the schema cannot say "a PNG of at least 32 px" (a schema-valid 1x1 PNG is rightly a 422) or that
# a batch answers 200 with per-image errors for a non-image part.
FUZZ_CHECKS_EXCLUDED = "positive_data_acceptance,negative_data_rejection"
_ST_MAIN = (
    "import sys; sys.setrecursionlimit(20000); from schemathesis.cli import schemathesis; sys.exit(schemathesis())"
)


def fuzz(
    url: str,
    max_examples: int,
    workdir: Path,
    seed: int | None = 1,
    max_time_s: int = 240,
    phases: str = "coverage,fuzzing,stateful",
    headers: tuple[str, ...] = (),
) -> dict:
    """Schemathesis (CLI) over the service's OpenAPI schema: every check but the two above."""
    # The CLI in-process with a deeper recursion limit: hypothesis describes strategies by parsing
    # lambda sources, and at the default limit CPython 3.11 fails that with "SystemError: AST
    # constructor recursion depth mismatch", ending the run with a tool error (not a finding).
    st = [sys.executable, "-c", _ST_MAIN]
    report = workdir / "schemathesis.json"
    card = httpx.get(f"{url}/v1/model", headers=dict(h.split(": ", 1) for h in headers), timeout=10).json()
    name, version = card["name"], card["version"]
    # Real path values, so the fuzzer gets past 404 to the request bodies (404s are in the corpus).
    (workdir / "schemathesis.toml").write_text(f'[parameters]\nmodel_name = "{name}"\nmodel_version = "{version}"\n')
    command = [
        *st,
        "run",
        f"{url}/schema/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        FUZZ_CHECKS_EXCLUDED,
        "--phases",
        phases,
        "--max-examples",
        str(max_examples),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--max-time",
        str(max_time_s),
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--generation-database",
        "none",
    ]
    command += ["--seed", str(seed)] if seed is not None else []
    for header in headers:
        command += ["-H", header]
    done = subprocess.run(
        command,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=max_time_s + 120,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "PYTHONHASHSEED": "0"},
    )
    summary = json.loads(report.read_text()) if report.is_file() else {}
    return {"exit_code": done.returncode, "output": done.stdout + done.stderr, "report": summary}
