"""The report's 'Why' section: reasons for the numbers, written from the run's own measurements.

Every sentence states figures from the results, so it stays true when the run or the model changes;
sentences whose condition does not hold in a run are left out.
"""

from __future__ import annotations

import statistics

SERVICE = "service (batching on)"
SEED = "seed-style baseline (torch eager)"


def findings(results: dict) -> str:
    http = {s["name"]: s for s in results["http"]["scenarios"]}
    ours, seed = http.get(SERVICE), http.get(SEED)
    lines = [
        _contention(results, ours, seed),
        _cost(ours, seed),
        _closed_loop(ours),
        _torch_threads(results["latency"]["rows"]),
        _missed(results["targets"]),
    ]
    return "## Why (from this run's measurements)\n\n" + "\n".join(f"- {line}" for line in lines if line)


def _c16(scenario: dict | None) -> dict | None:
    if scenario is None:
        return None
    return next((lv for lv in scenario["levels"] if lv["concurrency"] == 16 and lv["image"] == "png512"), None)


def _contention(results: dict, ours: dict | None, seed: dict | None) -> str:
    other = [lv["other_cpu_cores"] for s in results["http"]["scenarios"] for lv in s["levels"]]
    a, b = _c16(ours), _c16(seed)
    if not other or statistics.median(other) < 0.25 or not a or not b:
        return ""
    cpus = results["machine"]["usable_cpus"]
    return (
        f"The machine was shared: other processes used a median {statistics.median(other):.2f} of its {cpus} "
        f"CPUs during the HTTP levels ({results['meta']['latency_other_cpu_cores']:.2f} during the latency suite). "
        f"At c=16 the service ran on {a['server_cpu_cores']:.2f} cores and the seed-style server on "
        f"{b['server_cpu_cores']:.2f}: Linux shares CPU time per thread, and the baseline runs a thread per "
        "connection with its own OpenMP threads, so it takes a larger share of a contended machine. Raw "
        "throughput therefore understates the difference; CPU time per request does not."
    )


def _cost(ours: dict | None, seed: dict | None) -> str:
    a, b = _c16(ours), _c16(seed)
    split = ours.get("breakdown_c1") if ours else None
    if not a or not b or not split or not a.get("server_cpu_ms_per_request"):
        return ""
    cpu, seed_cpu = a["server_cpu_ms_per_request"], b["server_cpu_ms_per_request"]
    return (
        f"Where the milliseconds go: one request costs the service {cpu:.1f} ms of CPU at c=16 (the seed-style "
        f"server {seed_cpu:.1f} ms, {seed_cpu / cpu:.1f}x as much). One at a time it spends "
        f"{split['decode_ms']:.1f} ms decoding and preprocessing the 512x512 PNG (Pillow's zlib inflate "
        f"and PNG unfiltering), {split['inference_ms']:.1f} ms in int8 inference, and "
        f"{split['outside_handler_ms']:.1f} ms in HTTP, ASGI, JSON, logging and loopback. On 2 free cores that "
        f"cost allows about {2000 / cpu:.0f} requests/s."
    )


def _closed_loop(ours: dict | None) -> str:
    a = _c16(ours)
    if not a or not a["throughput_rps"]:
        return ""
    return (
        f"Latency under load follows throughput: with 16 requests always in flight, each waits for about 15 "
        f"others, so p50 ~ 16 / throughput = {16000 / a['throughput_rps']:.0f} ms here "
        f"(measured {a['latency_ms']['p50']:.0f} ms); the p99 target falls with the throughput one."
    )


def _torch_threads(rows: list[dict]) -> str:
    ms = {
        (r["backend"], r["threads"]): r["median_ms"] for r in rows if r.get("kind") == "inference" and r["batch"] == 1
    }
    one, two = ms.get(("torch-eager", 1)), ms.get(("torch-eager", 2))
    if not one or not two or two < 2 * one:
        return ""
    return (
        f"torch eager at batch 1 took {two:.0f} ms with 2 threads against {one:.1f} ms with 1: each of its "
        "OpenMP parallel regions waits for its slowest thread, and with a core held by another process that "
        "is a scheduler time slice per layer. ONNX Runtime (spinning off) lost much less: "
        f"{ms.get(('ort-int8', 2), 0):.2f} ms against {ms.get(('ort-int8', 1), 0):.2f} ms. The 2-thread "
        "speed-ups are therefore inflated; the 1-thread ones are the fair reading."
    )


def _missed(targets: list[dict]) -> str:
    missed = [t for t in targets if t["met"] is False]
    if not missed:
        return "Every target was met in this run."
    named = "; ".join(f"{t['name']} ({t['measured']} against {t['target']}, {t['margin']:+.0%})" for t in missed)
    return f"Missed in this run: {named}."
