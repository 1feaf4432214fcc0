"""HTTP load: the service (micro-batching on and off, a small-queue overload run, fp32), the
seed-style baseline and the peer servers (benchmarks/peers: what a user would pick instead), driven
over loopback at rising concurrency with real image files, plus cold starts.

Every level is bounded by a request cap and a time cap. Per level: exact p50/p95/p99 of the 200
answers, throughput (200s per second), every status count (timeouts and connection errors
included), the server's peak and mean RSS and CPU, and the CPU the client and other processes took.
The machine is shared, so the whole sweep runs `rounds` times, scenarios interleaved, and each
figure is the median over rounds (status counts are summed, RSS peaks are the maximum). A peer that
is not installed, fails to start or dies under load is a scenario with `failed` and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import math
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from benchmarks.harness.client import Call, Client, Result, Tally, closed_loop
from benchmarks.harness.process import ServerFailed
from benchmarks.harness.stats import nearest_rank
from benchmarks.machine import Meter, wait_for_quiet
from benchmarks.peers import PEERS, Peer
from benchmarks.peers.calls import multipart, peer_call
from benchmarks.servers import Server, peer_python, start_peer, start_seed, start_service
from service.card import CARD_FILE


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    # Per level. At 4.5 s the 2026-12-07 run's service levels held 447 requests at c=1 and 1007 at c=16 (p99
    # from hundreds of samples); at 6 s the whole run took 16 minutes, over issue 14's 15 for `make bench`.
    max_seconds: float = 4.5
    max_requests: int = 3000  # per level
    warmup_requests: int = 40  # per level, not recorded
    mix_concurrency: int = 16  # the real-file mix level
    rounds: int = 3
    cold_starts: int = 3
    small_queue: int = 8  # QUEUE_MAX for the overload run
    quiet_wait_s: float = 15.0  # longest wait for a quiet machine before each scenario
    breakdown_requests: int = 100  # sequential requests whose server-side timings are read


SMOKE = Plan(
    max_seconds=1.0, max_requests=24, warmup_requests=4, rounds=1, cold_starts=1, quiet_wait_s=0.0, breakdown_requests=5
)


@dataclass(frozen=True)
class Target:
    """What the servers load: the service's folder and interpreter, the baseline's weights, the bodies."""

    model_dir: Path
    checkpoint: Path
    service_python: str
    png512: bytes
    mix: list[bytes]  # the real test split, cycled
    work: Path  # server logs


@dataclass(frozen=True)
class Scenario:
    name: str
    server: str  # service | seed | peer
    env: dict[str, str] = field(default_factory=dict)
    levels: tuple[int, ...] = ()  # () = the plan's concurrency levels
    mix: bool = False  # add the real-file mix level
    protocols: bool = False  # the same image also through OIP JSON and OIP binary, at the same levels
    peer: Peer | None = None
    # POST /admin/models/reload this often while the levels run (0: never): what a swap costs the traffic.
    swap_every_s: float = 0.0


# The shadow candidate in the benchmark is the served model itself (a copy would be the same bytes): the
# same architecture, so its cost is what a refreshed ResNet-18 beside the primary costs.
MODEL_DIR = "{model_dir}"
ADMIN_KEY = "bench-admin-key-0123456789"
SHADOW_LEVELS = (1, 16)
RELOAD_S = 0.5


def scenarios(plan: Plan) -> list[Scenario]:
    top = max(plan.concurrency)
    return [
        Scenario("service (batching on)", "service", {"BATCHING": "1"}, mix=True),
        Scenario("service (batching off)", "service", {"BATCHING": "0"}),
        Scenario(f"service (small queue {plan.small_queue})", "service", {"QUEUE_MAX": str(plan.small_queue)}, (top,)),
        Scenario("service fp32 (batching on)", "service", {"MODEL_VARIANT": "fp32"}, (1, 16)),
        # The trust layer's cost: the same service with the OOD gate (and its scoring) off.
        Scenario("service (OOD gate off)", "service", {"OOD_POLICY": "off"}, (1, 16)),
        Scenario("service: /v1/predict vs OIP JSON vs OIP binary", "service", {}, (1, 16), protocols=True),
        # The shadow's cost side by side with the first scenario's c=1 and c=16 (no shadow).
        Scenario("service + shadow (sample 1.0)", "service", {"SHADOW_MODEL_DIR": MODEL_DIR}, SHADOW_LEVELS),
        Scenario(
            "service + shadow (sample 0.25)",
            "service",
            {"SHADOW_MODEL_DIR": MODEL_DIR, "SHADOW_SAMPLE": "0.25"},
            SHADOW_LEVELS,
        ),
        Scenario(
            f"service (model reload every {RELOAD_S:g} s)",
            "service",
            {"ADMIN_API_KEY": ADMIN_KEY},
            (16,),
            swap_every_s=RELOAD_S,
        ),
        Scenario("seed-style baseline (torch eager)", "seed", mix=True),
        *(Scenario(peer_scenario(p), "peer", levels=(1, 16), peer=p) for p in PEERS),
    ]


def peer_scenario(peer: Peer) -> str:
    return f"peer: {peer.title}"


def run_load(target: Target, plan: Plan) -> dict:
    """Every scenario, `plan.rounds` times, and the cold starts: the `http` section of the results."""
    pythons = {p.name: peer_python(p) for p in PEERS}
    rounds = [[_run(target, plan, s, r, pythons) for s in scenarios(plan)] for r in range(plan.rounds)]
    merged = [merge(list(runs)) for runs in zip(*rounds, strict=True)]
    return {"rounds": plan.rounds, "scenarios": merged, "cold_start": cold_starts(target, plan)}


def _run(target: Target, plan: Plan, scenario: Scenario, round_no: int, pythons: dict) -> dict:
    if scenario.peer is not None:
        return _run_peer(target, plan, scenario, round_no, *pythons[scenario.peer.name])
    quiet = wait_for_quiet(plan.quiet_wait_s) if plan.quiet_wait_s > 0 else {}
    log = _log(target, scenario, round_no)
    env = {k: v.replace(MODEL_DIR, str(target.model_dir)) for k, v in scenario.env.items()}
    if scenario.server == "seed":
        server, path = start_seed(target.checkpoint, target.model_dir, log), "/predict"
        call = partial(multipart, path, "file")  # the seed's FastAPI `UploadFile` field
    else:
        server, path = start_service(target.service_python, target.model_dir, log, **env), "/v1/predict"
        call = partial(_post, path, content_type="image/png")
    swapper = Swapper(server.port, scenario.swap_every_s) if scenario.swap_every_s else None
    try:
        png = [call(target.png512)]
        answer = _answer(server, png[0])
        with swapper or contextlib.nullcontext():
            levels = [_level(server, png, c, plan, "png512") for c in scenario.levels or plan.concurrency]
        if scenario.protocols:
            for label, call in oip_calls(target.model_dir, target.png512).items():
                levels += [_level(server, [call], c, plan, label) for c in scenario.levels]
        if scenario.mix and target.mix:
            mixed = [call(b) for b in target.mix]
            levels.append(_level(server, mixed, plan.mix_concurrency, plan, f"real test split ({len(mixed)} files)"))
        split = breakdown(server, target.png512, plan.breakdown_requests) if scenario.server == "service" else {}
        extra = {"breakdown_c1": split}
        if swapper:
            extra["swaps"] = swapper.summary()
        if "SHADOW_MODEL_DIR" in env:
            extra["shadow"] = shadow_summary(server.port)
        return _record(scenario, server, quiet, levels, answer) | extra
    finally:
        server.stop()


class Swapper:
    """POST /admin/models/reload every `every_s` seconds in a thread while the load runs; counts the
    answers (each reload verifies, self-tests and swaps the whole model)."""

    def __init__(self, port: int, every_s: float) -> None:
        self.port, self.every_s = port, every_s
        self.statuses: dict[str, int] = {}
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swapper", daemon=True)

    def __enter__(self) -> Swapper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while True:  # the first reload at once: even a short (smoke) level sees one
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            started = time.perf_counter()
            try:
                connection.request("POST", "/admin/models/reload", b"", {"X-Admin-Key": ADMIN_KEY})
                status = str(connection.getresponse().status)
            except OSError as exc:
                status = type(exc).__name__
            finally:
                connection.close()
            self.seconds.append(time.perf_counter() - started)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if self._stop.wait(self.every_s):
                return

    def summary(self) -> dict:
        return {
            "statuses": self.statuses,
            "median_reload_ms": _ms(statistics.median(self.seconds)) if self.seconds else None,
        }


def shadow_summary(port: int) -> dict:
    """The service's own count of what the shadow compared and dropped during the levels."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/v1/shadow")
        summary = json.loads(connection.getresponse().read())
    finally:
        connection.close()
    return {k: summary.get(k) for k in ("sample", "compared", "agree", "disagree", "dropped", "errors")}


def _run_peer(target: Target, plan: Plan, scenario: Scenario, round_no: int, python: str | None, where: str) -> dict:
    peer = scenario.peer
    failed = {"name": scenario.name, "server": "peer", "peer": peer.name, "how": peer.how, "interpreter": where}
    failed["levels"] = []
    if python is None:
        return failed | {"failed": where}
    quiet = wait_for_quiet(plan.quiet_wait_s) if plan.quiet_wait_s > 0 else {}
    try:
        server = start_peer(peer, python, target.model_dir, _log(target, scenario, round_no))
    except ServerFailed as exc:
        return failed | {"failed": f"did not start: {_last_lines(str(exc))}"}
    try:
        call = peer_call(peer, target.png512, _model_name(target.model_dir))
        answer = _answer(server, call)
        levels = [_level(server, [call], c, plan, "png512") for c in scenario.levels]
        return failed | _record(scenario, server, quiet, levels, answer)
    except RuntimeError as exc:  # it died under load
        return failed | {"failed": _last_lines(str(exc))}
    finally:
        server.stop()


def _record(scenario: Scenario, server: Server, quiet: dict, levels: list[dict], answer: dict) -> dict:
    return {
        "name": scenario.name,
        "server": scenario.server,
        "env": scenario.env,
        "settings": server.settings(),
        "torch_loaded": server.torch_loaded,
        "processes": server.processes,
        "answer": answer,
        "ready_s": round(server.ready_s, 3),
        "rss_at_ready_mb": round(server.rss_at_ready_mb, 1),
        "rss_hwm_mb": round(server.tree_rss_mb("VmHWM"), 1),  # lifetime peak, start-up included
        "quiet_before": quiet,
        "levels": levels,
    }


def _answer(server: Server, call: Call) -> dict:
    """The label and probability one request gets: every server must answer the same image the same."""
    (result,) = drive(server.port, [call], 1, 1, 30.0)
    if result.status != 200:
        raise RuntimeError(f"{server.name} answered {result.status or result.error}: {result.body[:300]!r}")
    body = json.loads(result.body)
    body = body["predictions"][0] if isinstance(body, dict) and "predictions" in body else body
    body = body[0] if isinstance(body, list) else body
    return {"label": body["label"], "probability": round(float(body["probability"]), 6)}


def _model_name(model_dir: Path) -> str:
    return json.loads((model_dir / CARD_FILE).read_text())["name"]


def _log(target: Target, scenario: Scenario, round_no: int) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in scenario.name.lower())
    return target.work / f"server-{slug}-r{round_no}.log"


def _last_lines(text: str) -> str:
    """The reason in a server's last words: its last error line, else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    return (errors or lines or ["no output"])[-1][-400:]


def oip_calls(model_dir: Path, image: bytes) -> dict[str, Call]:
    """The image as one BYTES element: base64 in an OIP JSON body, raw in an OIP binary body (what
    tritonclient sends by default: a JSON header, then the 4-byte length and the file)."""
    path = f"/v2/models/{_model_name(model_dir)}/infer"
    tensor = {"name": "image_bytes", "shape": [1], "datatype": "BYTES"}
    as_json = json.dumps({"inputs": [tensor | {"data": [base64.b64encode(image).decode()]}]}).encode()
    head = json.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": 4 + len(image)}}]}).encode()
    as_binary = head + struct.pack("<I", len(image)) + image
    headers = (("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(len(head))))
    return {
        "png512 via OIP JSON (base64 BYTES)": _post(path, as_json, "application/json"),
        "png512 via OIP binary (BYTES)": Call("POST", path, as_binary, headers),
    }


def _post(path: str, body: bytes, content_type: str = "application/octet-stream") -> Call:
    return Call("POST", path, body, (("Content-Type", content_type), ("Accept", "application/json")))


def drive(port: int, calls: list[Call], concurrency: int, max_requests: int, max_seconds: float) -> list[Result]:
    """Closed-loop load cycling through `calls`, on `concurrency` keep-alive connections."""

    async def run() -> list[Result]:
        client = Client(port, timeout=30.0)
        try:
            return await closed_loop(client, lambda i: calls[i % len(calls)], concurrency, max_seconds, max_requests)
        finally:
            client.close()

    return asyncio.run(run())


def _level(server: Server, calls: list[Call], concurrency: int, plan: Plan, image: str) -> dict:
    drive(server.port, calls, concurrency, min(plan.warmup_requests, plan.max_requests), plan.max_seconds)
    meter = Meter(server.pid)
    started = time.perf_counter()
    results = drive(server.port, calls, concurrency, plan.max_requests, plan.max_seconds)
    wall_s = time.perf_counter() - started
    usage = meter.stop()
    if not server.alive():
        raise RuntimeError(f"{server.name} died under load: {server.tail()}")
    answered = [r for r in results if not r.error]
    ok = [r.latency for r in answered if r.status == 200]
    latency = {name: _ms(nearest_rank(ok, q)) for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}
    return {
        "image": image,
        "concurrency": concurrency,
        "requests": len(results),
        "duration_s": round(wall_s, 3),
        "throughput_rps": round(len(ok) / wall_s, 1),
        # The server's CPU per answered request: what the throughput is worth on a machine whose CPUs
        # it does not have to share (requests/s on n free cores ~ n * 1000 / this).
        "server_cpu_ms_per_request": round(usage.server_cpu_s * 1000.0 / len(answered), 2) if answered else None,
        "latency_ms": latency | {"mean": _ms(statistics.fmean(ok) if ok else math.nan)},
        "statuses": Tally.of(results).counts(),
        **usage.summary(),
    }


def breakdown(server: Server, body: bytes, count: int) -> dict:
    """Where one request's milliseconds go at concurrency 1: medians of the service's own timings
    (decode, queue, inference, handler total) beside the client's clock; the rest is HTTP and ASGI."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    rows = []
    try:
        for _ in range(count):
            sent = time.perf_counter()
            connection.request("POST", "/v1/predict", body, {"Content-Type": "image/png"})
            answer = connection.getresponse().read()
            client_ms = (time.perf_counter() - sent) * 1000.0
            rows.append({"client_ms": client_ms, **json.loads(answer)["timings"]})
    finally:
        connection.close()
    out = {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
    out["outside_handler_ms"] = round(out["client_ms"] - out["total_ms"], 3)
    return out


def merge(runs: list[dict]) -> dict:
    """One scenario's rounds -> medians per level; status counts summed; peaks are maxima. Rounds in
    which a peer failed are listed; a peer that failed in every round keeps the first failure."""
    failed = [r for r in runs if "failed" in r]
    runs = [r for r in runs if "failed" not in r]
    if not runs:
        return failed[0] | {"failed_rounds": len(failed)}
    out = {key: runs[0][key] for key in ("name", "server", "env", "settings", "torch_loaded")}
    out |= {key: runs[0][key] for key in ("peer", "how", "interpreter", "processes", "answer") if key in runs[0]}
    if failed:
        out["failed_rounds"] = len(failed)
        out["failures"] = [r["failed"] for r in failed]
    out["ready_s"] = statistics.median(r["ready_s"] for r in runs)
    out["rss_hwm_mb"] = max(r["rss_hwm_mb"] for r in runs)
    out["quiet_before"] = [r["quiet_before"] for r in runs]
    split = [r["breakdown_c1"] for r in runs if r.get("breakdown_c1")]
    out["breakdown_c1"] = {k: _median(b[k] for b in split) for k in split[0]} if split else {}
    out["levels"] = []
    for levels in zip(*(r["levels"] for r in runs), strict=True):
        numeric = [k for k, v in levels[0].items() if isinstance(v, int | float)]
        level = {k: _median(lv[k] for lv in levels) for k in numeric}
        level["image"] = levels[0]["image"]
        level["latency_ms"] = {k: _median(lv["latency_ms"][k] for lv in levels) for k in levels[0]["latency_ms"]}
        level["statuses"] = _sum_counts(lv["statuses"] for lv in levels)
        level["server_rss_peak_mb"] = max(lv["server_rss_peak_mb"] for lv in levels)
        level["throughput_rps_rounds"] = [lv["throughput_rps"] for lv in levels]
        out["levels"].append(level)
    out["rss_peak_mb"] = max(level["server_rss_peak_mb"] for level in out["levels"])
    if "swaps" in runs[0]:
        out["swaps"] = {
            "statuses": _sum_counts(r["swaps"]["statuses"] for r in runs),
            "median_reload_ms": _median(r["swaps"]["median_reload_ms"] for r in runs),
        }
    if "shadow" in runs[0]:
        out["shadow"] = {k: _sum_counts_of(r["shadow"][k] for r in runs) for k in runs[0]["shadow"] if k != "sample"}
        out["shadow"]["sample"] = runs[0]["shadow"]["sample"]
    return out


def cold_starts(target: Target, plan: Plan) -> dict:
    """Spawn to first ready answer, `plan.cold_starts` times each (model files are in the page cache)."""
    out = {}
    for name in ("service", "seed"):
        times, rss = [], []
        for i in range(plan.cold_starts):
            if plan.quiet_wait_s > 0:
                wait_for_quiet(plan.quiet_wait_s / 3)
            log = target.work / f"cold-{name}-{i}.log"
            if name == "seed":
                server = start_seed(target.checkpoint, target.model_dir, log)
            else:
                server = start_service(target.service_python, target.model_dir, log)
            times.append(server.ready_s)
            rss.append(server.rss_at_ready_mb)
            server.stop()
        out[name] = {
            "median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times],
            "rss_at_ready_mb": round(statistics.median(rss), 1),
        }
    return out


def _sum_counts_of(values) -> int:
    return sum(v or 0 for v in values)


def _median(values) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _sum_counts(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000.0, 2)
