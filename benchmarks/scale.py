"""Horizontal scale on one host, shown: Caddy (deploy/caddy/Caddyfile) balancing service processes.

    python -m benchmarks.scale [--smoke] [--model-dir DIR] [--out DIR]      (make scale)

Closed-loop load (benchmarks.harness.client, concurrency 16, one PNG) in five phases, each with fresh
processes: one process direct; one behind the proxy (HTTPS); two behind the proxy with one inference
thread each (the two cores split between them); two with the default threads (both cores each);
and two behind the proxy where one gets SIGTERM a third of the way in. The last phase counts failed
requests (there must be none: the draining process turns not-ready, the proxy's health check takes it
out, and its in-flight requests finish), the spread before and after, and the stopped process's exit.
Every process shares the same cores with the client and the proxy, so two processes cannot double the
throughput of one here; the phases show what the proxy costs and that the spread and the drain work.
Writes OUT/scale.json and OUT/scale.md (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from benchmarks.harness.client import Call, Client, Result, Tally, closed_loop
from benchmarks.harness.process import rss_mb
from benchmarks.harness.stats import nearest_rank
from benchmarks.machine import busy_cpu_s, loadavg, machine_info, process_cpu_s, self_cpu_s, wait_for_quiet
from benchmarks.proxy import HOST, Caddy
from benchmarks.samples import write_samples
from benchmarks.servers import Server, start_service

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = 16
DRAIN = {"DRAIN_GRACE_S": "2", "DRAIN_TIMEOUT_S": "10"}  # compose's defaults
PROXIED = {"FORWARDED_ALLOW_IPS": "127.0.0.1", **DRAIN}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds per phase (the test suite's form)")
    parser.add_argument("--model-dir", type=Path, help="default: models/, else a 128-px stand-in (needs torch)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=Path("/tmp/chestnet-scale"))
    args = parser.parse_args(argv)
    seconds = 2.0 if args.smoke else 15.0
    model_dir, model_note = _model(args.model_dir, args.work)
    results = run(model_dir, args.work, seconds)
    results.update(model=model_note, machine=machine_info(), loadavg_after=loadavg(), smoke=args.smoke)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "scale.md").write_text(report(results))
    print(report(results))
    return 0 if results["stop"]["failed"] == 0 else 1


def run(model_dir: Path, work: Path, seconds: float, only_stop: bool = False, quiet_wait_s: float = 30.0) -> dict:
    """Every phase (or only the stop phase), `seconds` of load each (the stop phase twice as long); each
    starts when other processes are quiet, or after `quiet_wait_s`."""
    body = write_samples(work / "samples")["png512"].path.read_bytes()
    one = {"INFER_THREADS": "1", "DECODE_THREADS": "1"}
    common = {"model_dir": model_dir, "body": body, "seconds": seconds, "quiet_wait_s": quiet_wait_s}
    phases = [] if only_stop else [
        _phase("1 process, direct", work=work / "direct", envs=[{}], proxy=False, **common),
        _phase("1 process, proxy", work=work / "one", envs=[PROXIED], **common),
        _phase("2 processes x 1 thread, proxy", work=work / "two1", envs=[PROXIED | one] * 2, **common),
        _phase("2 processes x default threads, proxy", work=work / "two2", envs=[PROXIED] * 2, **common),
    ]  # fmt: skip
    stop = _phase(
        "2 processes x 1 thread, proxy, one stopped",
        work=work / "stop",
        envs=[PROXIED | one] * 2,
        stop_after_s=2 * seconds / 3,
        **common | {"seconds": 2 * seconds},
    )
    return {"seconds_per_phase": seconds, "concurrency": CONCURRENCY, "phases": phases, "stop": stop}


def _phase(
    name: str,
    model_dir: Path,
    work: Path,
    body: bytes,
    seconds: float,
    envs: list[dict[str, str]],
    proxy: bool = True,
    stop_after_s: float | None = None,
    quiet_wait_s: float = 30.0,
) -> dict:
    """Fresh processes (and proxy), a warm-up, then `seconds` of load; SIGTERM to the first one if asked."""
    work.mkdir(parents=True, exist_ok=True)
    servers = [start_service(sys.executable, model_dir, work / f"service-{i}.log", **env) for i, env in enumerate(envs)]
    caddy = None
    try:
        if proxy:
            caddy = Caddy([f"127.0.0.1:{s.port}" for s in servers], work / "caddy")
            caddy.wait_ready()
        port = caddy.https_port if caddy else servers[0].port
        call = Call("POST", "/v1/predict", body, (("Content-Type", "image/png"),))
        tls = {"tls": caddy.ssl_context(), "server_name": HOST} if caddy else {}

        def load(requests: int, limit_s: float) -> tuple[list[Result], float]:
            async def go() -> list[Result]:
                client = Client(port, **tls)
                try:
                    return await closed_loop(client, lambda i: call, CONCURRENCY, limit_s, requests)
                finally:
                    client.close()

            t0 = time.perf_counter()
            return asyncio.run(go()), time.perf_counter() - t0

        load(CONCURRENCY * 4, seconds)  # warm-up: connections, TLS sessions, the first health checks
        quiet = wait_for_quiet(max_wait_s=quiet_wait_s) if quiet_wait_s else None  # the machine is shared
        pids = [s.pid for s in servers] + ([caddy.proc.pid] if caddy else [])
        before, client0, busy0 = [_cpu(p) for p in pids], self_cpu_s(), busy_cpu_s()
        started = datetime.now().astimezone()
        stopper = _Stopper(servers[0], stop_after_s) if stop_after_s is not None else None
        results, wall_s = load(10**9, seconds)
        after, client, busy = [_cpu(p) for p in pids], self_cpu_s() - client0, busy_cpu_s() - busy0
        cpu = [round(b - a, 2) if a is not None and b is not None else None for a, b in zip(before, after, strict=True)]
        time.sleep(0.3)  # the last answers' access-log lines
        row = _row(name, results, wall_s, servers, started)
        ours = client + sum(c for c in cpu if c is not None)
        row["cpu_s"] = {
            "client": round(client, 2),
            "each_process_then_proxy": cpu,  # None: the stopped process (gone before it could be read)
            "whole_machine": round(busy, 2),
        }
        # Other people's processes on the machine during the phase (the stopped process's share too).
        row["others_cpu_cores"] = round(max(0.0, busy - ours) / wall_s, 2)
        row["quiet_before"] = quiet
        if stopper is not None:
            stopper.join()
            row["stopped"] = stopper.summary()
        if caddy:
            row["proxy_rss_peak_mb"] = round(rss_mb(caddy.proc.pid, "VmHWM"), 1)
        row["process_rss_peak_mb"] = [round(rss_mb(s.pid, "VmHWM"), 1) if s.alive() else None for s in servers]
        return row
    finally:
        if caddy:
            caddy.stop()
        for server in servers:
            server.stop()


def _row(name: str, results: list[Result], wall_s: float, servers: list[Server], started: datetime) -> dict:
    ok = [r.latency for r in results if not r.error and r.status == 200]
    return {
        "name": name,
        "requests": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "statuses": Tally.of(results).counts(),
        "throughput_rps": round(len(ok) / wall_s, 1),
        "p50_ms": round(nearest_rank(ok, 50) * 1000, 1) if ok else None,
        "p99_ms": round(nearest_rank(ok, 99) * 1000, 1) if ok else None,
        "answered_by_process": [len(_answered(s, started)) for s in servers],
        "wall_s": round(wall_s, 2),
    }


class _Stopper(threading.Thread):
    """SIGTERM to one process after `after_s`, then wait for its exit."""

    def __init__(self, server: Server, after_s: float) -> None:
        super().__init__(daemon=True)
        self.server, self.after_s = server, after_s
        self.start()

    def run(self) -> None:
        time.sleep(self.after_s)
        self.sent_at = datetime.now().astimezone()
        self.server.proc.send_signal(signal.SIGTERM)
        self.exit_code = self.server.proc.wait(60)
        self.exited_s = (datetime.now().astimezone() - self.sent_at).total_seconds()

    def summary(self) -> dict:
        after = _answered(self.server, self.sent_at)
        last = max(after, default=self.sent_at)
        return {
            "sigterm_after_s": round(self.after_s, 2),
            "exit_code": self.exit_code,
            "exited_after_s": round(self.exited_s, 2),
            "answered_after_sigterm": len(after),
            "last_answer_after_sigterm_s": round((last - self.sent_at).total_seconds(), 2),
        }


def _answered(server: Server, since: datetime) -> list[datetime]:
    """When this process answered each prediction at or after `since`, from its access log."""
    times = []
    for line in server.output().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("logger") == "service.access" and record.get("route") == "/v1/predict":
            when = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
            if when >= since:
                times.append(when)
    return times


def _cpu(pid: int) -> float | None:
    try:
        return process_cpu_s(pid)
    except OSError:
        return None


def _model(model_dir: Path | None, work: Path) -> tuple[Path, str]:
    if model_dir is not None:
        return model_dir, f"given: {model_dir}"
    if (REPO / "models" / "model.json").is_file():
        return REPO / "models", "models/ (the pipeline's model)"
    out = work / "stand-in"
    if not (out / "models" / "model.json").is_file():
        code = f"import benchmarks.tinymodel as t; from pathlib import Path; t.SIZE = 128; t.build(Path({str(out)!r}))"
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    return out / "models", "stand-in: the real ChestNet, random weights, 128 px, int8 (models/ was not built)"


def report(r: dict) -> str:
    lines = [
        "# Horizontal scale on one host: Caddy in front of service processes",
        "",
        f"`python -m benchmarks.scale` ({'smoke' if r['smoke'] else 'full'}); model: {r['model']}; "
        f"closed loop, concurrency {r['concurrency']}, {r['seconds_per_phase']:g} s a phase, one 512x512 PNG.",
        f"Machine: {r['machine']['usable_cpus']} CPUs ({r['machine']['cpu_model']}), shared by the client, the "
        f"proxy and every process; load average after the run {r['loadavg_after']}.",
        "",
        "| phase | requests | failed | throughput (req/s) | p50 / p99 (ms) | answered by each process "
        "| others' CPU (cores) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in [*r["phases"], r["stop"]]:
        lines.append(
            f"| {p['name']} | {p['requests']} | {p['failed']} | {p['throughput_rps']} | {p['p50_ms']} / {p['p99_ms']} "
            f"| {' + '.join(map(str, p['answered_by_process']))} | {p['others_cpu_cores']} |"
        )
    s = r["stop"]["stopped"]
    lines += [
        "",
        f"Stop: SIGTERM to process 1 {s['sigterm_after_s']} s into the run; it answered "
        f"{s['answered_after_sigterm']} predictions after the signal (the last {s['last_answer_after_sigterm_s']} s "
        f"after it) and exited {s['exit_code']} {s['exited_after_s']} s after the signal; the client saw "
        f"{r['stop']['failed']} failed requests of {r['stop']['requests']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
