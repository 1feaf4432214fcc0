"""results.json -> report.md and latency_vs_concurrency.png.

`python -m benchmarks.report DIR` rewrites the report from DIR/results.json without re-measuring.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.findings import findings
from benchmarks.formatting import number as _num
from benchmarks.peers.table import section as peers_section
from benchmarks.refresh_report import refresh_section

PLOT = "latency_vs_concurrency.png"
REPORT = "report.md"
BACKENDS = ("ort-int8", "ort-fp32", "torch-eager")


def write_report(results: dict, out: Path) -> Path:
    plot_latency(results["http"], out / PLOT)
    sections = [
        _title(results),
        headline(results),
        _targets(results),
        peers_section(results),
        findings(results),
        _latency(results["latency"]),
        _http(results["http"]),
        _breakdown(results["http"]),
        refresh_section(results["http"]),
        _cold(results["http"]["cold_start"]),
        _machine(results),
        _method(),
    ]
    path = out / REPORT
    path.write_text("\n\n".join(sections) + "\n")
    return path


def _title(r: dict) -> str:
    m = r["meta"]
    smoke = " (SMOKE RUN: tiny counts and a stand-in model; these numbers mean nothing)" if m["mode"] == "smoke" else ""
    return (
        f"# Benchmarks{smoke}\n\nRun {m['started']} to {m['finished']} at commit `{m['commit']}` with "
        f"`{m['command']}`; model `{m['model']['name']}` {m['model']['version']}, "
        f"{m['model']['size']}x{m['model']['size']} grey input. Machine: {r['machine']['cpu_model']}, "
        f"{r['machine']['usable_cpus']} usable CPUs (details at the end)."
    )


def headline(r: dict) -> str:
    """The short table for the README: the service against the seed-style baseline."""
    http = {s["name"]: s for s in r["http"]["scenarios"]}
    ours, seed = http.get("service (batching on)"), http.get("seed-style baseline (torch eager)")
    ratio = {(x["batch"], x["threads"]): x for x in r["latency"]["ratios"]}.get((1, 2), {})
    rows = ["| | service (ONNX Runtime int8) | seed-style (torch eager) |", "|---|---|---|"]
    rows.append(f"| model latency, batch 1, 2 threads (median) | {_lat(r, 'ort-int8')} | {_lat(r, 'torch-eager')} |")
    for c in (1, 16):
        a, b = _find(ours, c), _find(seed, c)
        rows.append(f"| HTTP c={c}: p50 / p99 | {_pp(a)} | {_pp(b)} |")
        rows.append(f"| HTTP c={c}: throughput | {_rps(a)} | {_rps(b)} |")
    rows.append(f"| peak RSS under load | {_mb(ours)} | {_mb(seed)} |")
    cold = r["http"]["cold_start"]
    rows.append(f"| start to ready | {_s(cold.get('service'))} | {_s(cold.get('seed'))} |")
    speedup = ratio.get("torch_over_int8")
    return "## Headline\n\n" + "\n".join(rows) + (f"\n\nint8 model latency: {speedup}x torch eager." if speedup else "")


def _targets(results: dict) -> str:
    tables, http = {}, results["http"]
    for t in results["targets"]:
        met = {True: "yes", False: "**NO**", None: "not measured"}[t["met"]]
        margin = "" if t["margin"] is None else f"{t['margin']:+.0%}"
        row = f"| {t['name']} | {t['target']} | {_num(t['measured'])} | {met} | {margin} |"
        tables.setdefault(
            t["basis"], ["| target | wanted | measured | met | margin |", "|---|---|---|---|---|"]
        ).append(row)
    other = [lv["other_cpu_cores"] for s in http["scenarios"] for lv in s["levels"]]
    share = sorted(other)[len(other) // 2] if other else 0.0
    return (
        "## Targets\n\nMargin: how far past the target (+) or short of it (-), as a share of the target. "
        f"While the HTTP levels ran, other processes on this shared machine used a median {share:.2f} of its "
        f"{results['machine']['usable_cpus']} CPUs; throughput and tail latency are measured against what was left.\n\n"
        + "\n".join(tables.get("measured", []))
        + "\n\nThe same questions, independent of the CPU share the servers got: model speed-ups at one thread "
        "(torch's two-thread OpenMP runs collapse when a core is taken away), throughput projected from the "
        "server's CPU time per request, and the CPU per request of the two servers compared:\n\n"
        + "\n".join(tables.get("cpu-normalised", []))
    )


def _latency(lat: dict) -> str:
    inference = [r for r in lat["rows"] if r.get("kind") == "inference"]
    cases = sorted({(r["batch"], r["threads"]) for r in inference})
    median = {(r["backend"], r["batch"], r["threads"]): r["median_ms"] for r in inference}
    head = "| backend | " + " | ".join(f"b{b} t{t}" for b, t in cases) + " |"
    rows = [head, "|---" * (len(cases) + 1) + "|"]
    for backend in BACKENDS:
        rows.append(f"| {backend} | " + " | ".join(_num(median.get((backend, b, t))) for b, t in cases) + " |")
    ratio_rows = ["| batch, threads | torch / int8 | torch / fp32 | fp32 / int8 |", "|---|---|---|---|"]
    for x in lat["ratios"]:
        ratio_rows.append(
            f"| b{x['batch']} t{x['threads']} | {_x(x['torch_over_int8'])} | {_x(x['torch_over_fp32'])} "
            f"| {_x(x['fp32_over_int8'])} |"
        )
    decode_rows = ["| image | bytes | decode | decode + preprocess |", "|---|---|---|---|"]
    by_image: dict[str, dict] = {}
    for r in lat["rows"]:
        if r.get("kind") in ("decode", "decode+preprocess"):
            by_image.setdefault(r["image"], {"bytes": r["bytes"]})[r["kind"]] = r["median_ms"]
    for image, v in by_image.items():
        decode_rows.append(f"| {image} | {v['bytes']} | {_num(v.get('decode'))} | {_num(v.get('decode+preprocess'))} |")
    skipped = "\n".join(f"- {line}" for line in lat["skipped"])
    return (
        "## Model latency (pytest-benchmark medians, ms)\n\nInference, per call (a whole batch); "
        "b = batch size, t = threads.\n\n" + "\n".join(rows) + "\n\nSpeed-ups from the same run (ratio of medians):"
        "\n\n" + "\n".join(ratio_rows) + "\n\nDecoding (bytes -> upright grey image) and preprocessing "
        "(letterbox + normalise), one thread:\n\n"
        + "\n".join(decode_rows)
        + (f"\n\nSkipped:\n{skipped}" if skipped else "")
    )


def _http(http: dict) -> str:
    head = (
        "| c | image | p50 | p95 | p99 | max | req/s | statuses | CPU ms/req | RSS peak MB | server CPU | client CPU "
        "| other CPU |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    parts = [
        f"## HTTP load (median of {http['rounds']} round(s); latency in ms over the 200 answers; CPU in cores)\n\n"
        f"![latency vs concurrency]({PLOT})"
    ]
    for s in http["scenarios"]:
        if "failed" in s:
            parts.append(f"### {s['name']}\n\nFailed: {s['failed']}")
            continue
        rows = [head]
        for lv in s["levels"]:
            lat = lv["latency_ms"]
            statuses = ", ".join(f"{k}: {v}" for k, v in lv["statuses"].items())
            rows.append(
                f"| {lv['concurrency']} | {lv['image']} | {_num(lat['p50'])} | {_num(lat['p95'])} | {_num(lat['p99'])} "
                f"| {_num(lat['max'])} | {_num(lv['throughput_rps'])} | {statuses} "
                f"| {_num(lv['server_cpu_ms_per_request'])} | {_num(lv['server_rss_peak_mb'])} "
                f"| {_num(lv['server_cpu_cores'])} | {_num(lv['client_cpu_cores'])} | {_num(lv['other_cpu_cores'])} |"
            )
        env = ", ".join(f"{k}={v}" for k, v in s["env"].items()) or "defaults"
        torch_note = "torch loaded" if s["torch_loaded"] else "torch not loaded"
        parts.append(
            f"### {s['name']}\n\n{env}; {torch_note}; peak RSS {s['rss_peak_mb']} MB under load, "
            f"{s['rss_hwm_mb']} MB lifetime peak.\n\n" + "\n".join(rows)
        )
    return "\n\n".join(parts)


def _breakdown(http: dict) -> str:
    rows = [
        "| scenario | client sees | handler total | decode + preprocess | queue | inference | outside the handler |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in http["scenarios"]:
        b = s.get("breakdown_c1")
        if b:
            rows.append(
                f"| {s['name']} | {_num(b['client_ms'])} | {_num(b['total_ms'])} | {_num(b['decode_ms'])} "
                f"| {_num(b['queue_ms'])} | {_num(b['inference_ms'])} | {_num(b['outside_handler_ms'])} |"
            )
    return (
        "## Where the milliseconds go (512x512 PNG, one request at a time; medians, ms)\n\n"
        "From the service's own `timings` in each answer beside the client's clock. 'Outside the handler' is "
        "HTTP parsing, ASGI, routing, JSON encoding, logging and loopback.\n\n" + "\n".join(rows)
    )


def _cold(cold: dict) -> str:
    rows = ["| server | median s | runs s | RSS at ready MB |", "|---|---|---|---|"]
    for name, c in cold.items():
        runs = ", ".join(f"{t:.2f}" for t in c["runs_s"])
        rows.append(f"| {name} | {c['median_s']:.2f} | {runs} | {c['rss_at_ready_mb']} |")
    return "## Cold start (process spawn to first 200 on the readiness route)\n\n" + "\n".join(rows)


def _machine(r: dict) -> str:
    m, meta = r["machine"], r["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"## Machine\n\n- CPU: {m['cpu_model']}; {m['logical_cpus']} logical, {m['usable_cpus']} usable; int8 "
        f"instructions: {', '.join(m['int8_flags']) or 'none'}\n- Memory: {m['memory_gib']} GiB; kernel {m['kernel']}; "
        f"Python {m['python']}\n- Libraries (benchmark process): {versions}\n- Service interpreter: "
        f"{meta['service_python']}\n- Load average (1, 5, 15 min) before: {meta['loadavg_before']}, after: "
        f"{meta['loadavg_after']}; other processes' CPU during the latency suite: {meta['latency_other_cpu_cores']} "
        "cores (per level in the HTTP tables)."
    )


def _method() -> str:
    return (
        "## Method\n\n- Model latency: pytest-benchmark, medians over rounds; ONNX Runtime through the service's "
        "own `Engine` (same session options), torch eager with `torch.set_num_threads`, both on the same weights.\n"
        "- HTTP: a closed-loop asyncio client on keep-alive connections (its CPU is the 'client CPU' column); "
        "each level has a warm-up, then runs until its request cap or time cap; percentiles are exact (nearest "
        "rank) over the 200 answers; 'other CPU' is what other processes on the shared machine used meanwhile.\n"
        "- The seed-style baseline: FastAPI + uvicorn, multipart `file`, torch eager ResNet-18 with PIL + "
        "torchvision transforms inside the `async def` endpoint, no batching (benchmarks/seed_server.py).\n"
        "- Peer servers: benchmarks/peers/ (one module per framework, each in its own venv from "
        "`make bench-peers`; a peer that is not installed or fails is reported as such).\n"
        "- Reproduce: `python -m benchmarks` (full) or `python -m benchmarks --smoke` (seconds; CI)."
    )


def plot_latency(http: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2))
    for s in http["scenarios"]:
        levels = [lv for lv in s["levels"] if lv["image"] == "png512"]
        if len(levels) < 2:
            continue
        xs = [lv["concurrency"] for lv in levels]
        line = left.plot(xs, [lv["latency_ms"]["p50"] for lv in levels], marker="o", label=s["name"])[0]
        left.plot(xs, [lv["latency_ms"]["p99"] for lv in levels], marker="x", ls="--", color=line.get_color())
        middle.plot(xs, [lv["throughput_rps"] for lv in levels], marker="o", color=line.get_color())
        right.plot(xs, [lv["server_cpu_ms_per_request"] for lv in levels], marker="o", color=line.get_color())
    left.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="latency ms (p50 solid, p99 dashed)")
    middle.set(xscale="log", xlabel="concurrency", ylabel="requests/s (200 answers)", ylim=(0, None))
    right.set(xscale="log", xlabel="concurrency", ylabel="server CPU ms per request", ylim=(0, None))
    for ax in (left, middle, right):
        ax.set_xticks([1, 4, 16, 64], labels=["1", "4", "16", "64"])
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    other = sorted(lv["other_cpu_cores"] for s in http["scenarios"] for lv in s["levels"])
    busy = f"; other processes used a median {other[len(other) // 2]:.2f} CPUs meanwhile" if other else ""
    fig.suptitle(f"512x512 PNG over loopback, 2-CPU machine{busy}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _find(scenario: dict | None, c: int) -> dict | None:
    if scenario is None:
        return None
    return next((lv for lv in scenario["levels"] if lv["concurrency"] == c and lv["image"] == "png512"), None)


def _lat(r: dict, backend: str) -> str:
    row = next(
        (x for x in r["latency"]["rows"] if x.get("backend") == backend and x["batch"] == 1 and x["threads"] == 2), None
    )
    return f"{row['median_ms']:.2f} ms" if row else "n/a"


def _pp(lv: dict | None) -> str:
    return f"{_num(lv['latency_ms']['p50'])} / {_num(lv['latency_ms']['p99'])} ms" if lv else "n/a"


def _rps(lv: dict | None) -> str:
    return f"{_num(lv['throughput_rps'])} req/s" if lv else "n/a"


def _mb(s: dict | None) -> str:
    return f"{s['rss_peak_mb']:.0f} MB" if s else "n/a"


def _s(c: dict | None) -> str:
    return f"{c['median_s']:.2f} s" if c else "n/a"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


if __name__ == "__main__":
    from benchmarks.targets import evaluate

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")
    results = json.loads((folder / "results.json").read_text())
    results["targets"] = evaluate(results)  # as targets.py reads them now
    print(write_report(results, folder))
