"""The issue's targets for a 2-core machine, checked against one run's results.

Each check returns what was measured, the target, whether it was met and by how much it was missed
or beaten, so the report can say it in numbers. A missing measurement (a skipped torch case, a
level the smoke run does not have) is reported as not measured, never as met.
"""

from __future__ import annotations

from collections.abc import Callable

SERVICE = "service (batching on)"
TRUST_OFF = "service (OOD gate off)"
SEED = "seed-style baseline (torch eager)"
LOAD_OK = {"200", "503"}
# Issue 14: ahead of every peer server (benchmarks/peers), measured side by side in the same run.
PEER_THROUGHPUT_X, PEER_P50_X, SEED_THROUGHPUT_X = 2.0, 0.7, 6.0
# Issue 14's per-stage targets: the service's own inference at c=1 against the model alone; decode +
# preprocess of the 512x512 PNG against 0.6 x the 4.0 ms the issue measured on a quiet 2-core EPYC; the
# time outside the handler; the client's c=1 p50 against decode + model alone; the footprint.
INSIDE_OVER_ALONE_X, DECODE_MS, OUTSIDE_MS, END_TO_END_X = 1.2, 0.6 * 4.0, 0.6, 1.3
LEAN_RSS_MB, LEAN_READY_S = 130.0, 0.5
# Issue 14 target 9: `make bench` in at most 15 minutes. The run measures itself (meta.seconds); setup and
# the peers' venvs, built once and then kept, come before it and are not in that figure.
BENCH_MINUTES = 15.0


def evaluate(results: dict) -> list[dict]:
    """The targets as measured, then the same questions read in a way that does not depend on how
    much of the shared machine the servers got (basis "cpu-normalised"); the report shows both."""
    latency, http = results["latency"], results["http"]
    ratio = {(r["batch"], r["threads"]): r for r in latency["ratios"]}
    c1, c16 = _level(http, SERVICE, 1), _level(http, SERVICE, 16)
    overload = next((s for s in http["scenarios"] if s["name"].startswith("service (small queue")), None)
    seed16 = _level(http, SEED, 16)
    # Two models in memory at once: a shadow beside the primary, or a reload's new session before the swap.
    two_models = [
        s for s in http["scenarios"] if s["server"] == "service" and ("shadow" in s["name"] or "reload" in s["name"])
    ]
    one_model = [s for s in http["scenarios"] if s["server"] == "service" and s not in two_models]
    int8_rss = [s["rss_peak_mb"] for s in one_model if "fp32" not in s["name"]]
    int8_peak = max(int8_rss) if int8_rss else None
    shadow_rss = [s["rss_peak_mb"] for s in two_models]
    b1t2, b1t1 = ratio.get((1, 2), {}), ratio.get((1, 1), {})
    off1, off16 = _level(http, TRUST_OFF, 1), _level(http, TRUST_OFF, 16)
    trust_rows = [r["median_ms"] for r in latency.get("rows", []) if r.get("kind") == "trust"]
    peers1, peers16 = peer_levels(http, 1), peer_levels(http, 16)
    best_rps = max((lv["throughput_rps"] for lv in peers16.values()), default=None)
    best_p50 = min((lv["latency_ms"]["p50"] for lv in peers1.values()), default=None)
    least_cpu = min((lv["server_cpu_ms_per_request"] for lv in peers16.values()), default=None)
    stages = _service_breakdown(http)
    alone = _median(latency, kind="inference", backend="ort-int8", batch=1, threads=2)
    decode = _median(latency, kind="decode+preprocess", image="png512")
    ready_s = http["cold_start"].get("service", {}).get("median_s")
    run_s = results.get("meta", {}).get("seconds")
    measured = [
        _at_least("ORT int8 vs torch eager, batch 1, 2 threads", b1t2.get("torch_over_int8"), 4.0, "x"),
        _at_least("ORT fp32 vs torch eager, batch 1, 2 threads", b1t2.get("torch_over_fp32"), 1.6, "x"),
        _at_most("HTTP c=1 p50, 512x512 PNG", _get(c1, lambda lv: lv["latency_ms"]["p50"]), 10.0, "ms"),
        _at_least("HTTP c=16 throughput", _get(c16, lambda lv: lv["throughput_rps"]), 150.0, "req/s"),
        _at_most("HTTP c=16 p99", _get(c16, lambda lv: lv["latency_ms"]["p99"]), 200.0, "ms"),
        _at_most("HTTP c=16 non-200 answers", _get(c16, _not_ok), 0, "answers"),
        _at_most("HTTP c=64 small queue: answers other than 200/503", _get(_top(overload), _not_200_503), 0, "answers"),
        _at_least(
            "c=16 throughput vs seed-style baseline", _ratio(c16, seed16, "throughput_rps"), SEED_THROUGHPUT_X, "x"
        ),
        _at_least("c=16 throughput vs the best peer server", _over(_get(c16, _rps), best_rps), PEER_THROUGHPUT_X, "x"),
        _at_most("c=1 p50 vs the best peer server's", _over(_get(c1, _p50), best_p50), PEER_P50_X, "x"),
        _at_most("serving RSS under load, int8", int8_peak, 200.0, "MB"),
        _at_most(
            "serving RSS under load, int8 primary + a shadow or a reload (compose mem_limit)",
            max(shadow_rss) if shadow_rss else None,
            512.0,
            "MB",
        ),
        _at_most("service start to ready", http["cold_start"].get("service", {}).get("median_s"), 2.0, "s"),
        _at_most("trust layer per image (OOD score, verdict, drift), beside the model", _first(trust_rows), 0.3, "ms"),
        _at_most("trust layer: added server CPU per request at c=1 (OOD gate on - off)", _delta(c1, off1), 0.3, "ms"),
        _at_least("trust layer: c=16 throughput, OOD gate on / off", _ratio(c16, off16, "throughput_rps"), 0.95, "x"),
        _at_most(
            "inference inside the service at c=1 / the int8 model alone (b1, 2 threads)",
            _over(stages.get("inference_ms"), alone),
            INSIDE_OVER_ALONE_X,
            "x",
        ),
        _at_most("decode + preprocess, 512x512 PNG (0.6 x the issue's 4.0 ms)", decode, DECODE_MS, "ms"),
        _at_most(
            "outside the handler at c=1 (client p50 - handler total)",
            stages.get("outside_handler_ms"),
            OUTSIDE_MS,
            "ms",
        ),
        _at_most(
            "c=1 client time / (decode + preprocess + model alone)",
            _over(stages.get("client_ms"), decode + alone if decode and alone else None),
            END_TO_END_X,
            "x",
        ),
        _at_most("serving RSS under load, int8 (issue 14)", int8_peak, LEAN_RSS_MB, "MB"),
        _at_most("service start to ready (issue 14)", ready_s, LEAN_READY_S, "s"),
        _at_most(
            "the benchmark run itself (`python -m benchmarks`, make bench's venvs already built)",
            None if run_s is None else round(run_s / 60.0, 1),
            BENCH_MINUTES,
            "min",
        ),
    ]
    normalised = [
        _at_least("ORT int8 vs torch eager, batch 1, 1 thread", b1t1.get("torch_over_int8"), 4.0, "x"),
        _at_least("ORT fp32 vs torch eager, batch 1, 1 thread", b1t1.get("torch_over_fp32"), 1.6, "x"),
        _at_least("HTTP c=16 throughput on 2 free cores (2000 / CPU ms per request)", _projected(c16), 150.0, "req/s"),
        _at_least(
            "c=16 CPU per request: seed-style / service", _ratio(seed16, c16, "server_cpu_ms_per_request"), 3.0, "x"
        ),
        _at_least(
            "c=16 CPU per request: the most frugal peer's / the service's",
            _over(least_cpu, _get(c16, lambda lv: lv["server_cpu_ms_per_request"])),
            PEER_THROUGHPUT_X,
            "x",
        ),
    ]
    return [c | {"basis": "measured"} for c in measured] + [c | {"basis": "cpu-normalised"} for c in normalised]


def peer_levels(http: dict, concurrency: int) -> dict[str, dict]:
    """Each measured peer server's png512 level at `concurrency`, by scenario name (failed peers left out)."""
    found = {}
    for s in http["scenarios"]:
        if s["server"] == "peer" and "failed" not in s:
            level = _level(http, s["name"], concurrency)
            if level is not None:
                found[s["name"]] = level
    return found


def _service_breakdown(http: dict) -> dict:
    """Where one c=1 request's time went in the service's own scenario (client, handler stages, outside)."""
    scenario = next((s for s in http["scenarios"] if s["name"] == SERVICE), None)
    return (scenario or {}).get("breakdown_c1") or {}


def _median(latency: dict, **match) -> float | None:
    """The median (ms) of the first pytest-benchmark row whose extra info matches `match`."""
    rows = (r for r in latency.get("rows", []) if all(r.get(k) == v for k, v in match.items()))
    return next((r["median_ms"] for r in rows), None)


def _rps(level: dict) -> float:
    return level["throughput_rps"]


def _p50(level: dict) -> float:
    return level["latency_ms"]["p50"]


def _over(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 2) if numerator and denominator else None


def _first(values: list[float]) -> float | None:
    return values[0] if values else None


def _delta(on: dict | None, off: dict | None) -> float | None:
    key = "server_cpu_ms_per_request"
    if on is None or off is None or on.get(key) is None or off.get(key) is None:
        return None
    return round(on[key] - off[key], 3)


def _level(http: dict, scenario: str, concurrency: int) -> dict | None:
    for s in http["scenarios"]:
        if s["name"] == scenario:
            return next(
                (lv for lv in s["levels"] if lv["concurrency"] == concurrency and lv["image"] == "png512"), None
            )
    return None


def _top(scenario: dict | None) -> dict | None:
    return scenario["levels"][-1] if scenario and scenario["levels"] else None


def _get(level: dict | None, pick: Callable[[dict], float | None]) -> float | None:
    return pick(level) if level is not None else None


def _not_ok(level: dict) -> int:
    return sum(n for status, n in level["statuses"].items() if status != "200")


def _not_200_503(level: dict) -> int:
    return sum(n for status, n in level["statuses"].items() if status not in LOAD_OK)


def _ratio(numerator: dict | None, denominator: dict | None, key: str) -> float | None:
    if not numerator or not denominator or not numerator.get(key) or not denominator.get(key):
        return None
    return round(numerator[key] / denominator[key], 2)


def _projected(level: dict | None) -> float | None:
    cpu_ms = level.get("server_cpu_ms_per_request") if level else None
    return round(2000.0 / cpu_ms, 1) if cpu_ms else None


def _at_least(name: str, value: float | None, target: float, unit: str) -> dict:
    return _check(name, value, f">= {target:g} {unit}", None if value is None else value >= target, value, target)


def _at_most(name: str, value: float | None, target: float, unit: str) -> dict:
    return _check(name, value, f"<= {target:g} {unit}", None if value is None else value <= target, value, target)


def _check(name: str, value, target_text: str, met: bool | None, measured, target: float) -> dict:
    # How far from the target, as a fraction of it: positive = beaten by, negative = missed by.
    margin = None
    if measured is not None and target:
        margin = round((measured - target) / target * (1 if target_text.startswith(">=") else -1), 3)
    return {"name": name, "target": target_text, "measured": value, "met": met, "margin": margin}
