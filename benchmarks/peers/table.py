"""The report's side-by-side table: this service, the seed-style baseline and each peer server, from
the same run's interleaved rounds (benchmarks/load.py), with the issue-14 ratios and whether they hold."""

from __future__ import annotations

from benchmarks.formatting import number
from benchmarks.targets import PEER_P50_X, PEER_THROUGHPUT_X, SEED, SEED_THROUGHPUT_X, SERVICE, peer_levels


def section(results: dict) -> str:
    http = results["http"]
    by_name = {s["name"]: s for s in http["scenarios"]}
    rows = [
        "| server | c=1 p50 ms | c=1 p99 ms | c=16 req/s | c=16 req/s per round | c=16 p99 ms | c=16 CPU ms/req "
        "| others' CPU at c=16 | peak RSS MB | processes | start to ready s | answer to the 512² PNG |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ours = by_name.get(SERVICE)
    named = [("this service", ours), ("seed-style baseline (FastAPI, torch eager)", by_name.get(SEED))]
    named += [(s["name"].removeprefix("peer: "), s) for s in http["scenarios"] if s["server"] == "peer"]
    for title, s in named:
        rows.append(_row(title, s))
    return (
        "## Peer servers side by side\n\n"
        f"Every server below ran in the same {http['rounds']} interleaved round(s) as the service, under the "
        "same client, on the same 512x512 PNG, for the same time per level; medians over rounds. Each peer "
        "serves the same int8 ONNX file with the service's own decode, preprocess and decision rule "
        "(benchmarks/peers/common.py), with ONNX Runtime on the service's thread budget (intra-op threads = "
        f"usable CPUs, {_threads(results)} here; one inter-op thread; ORT's default spinning, where the service "
        "turns it off). RSS is summed over each server's process tree (shared pages count once per process). "
        "The seed-style baseline serves the torch checkpoint with a plain resize and the 0.5 threshold, as the "
        "original did; the others answer with the card's letterbox, calibration and threshold ('abstained': the "
        "service's OOD gate declined the image after the same work). 'Others' CPU' is what other processes on "
        "this shared machine took meanwhile (cores, median over rounds): throughput under it is a lower bound, and "
        "the CPU per request is the comparison it does not bend.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + _ratios(results)
        + "\n\nHow each peer is written (benchmarks/peers/) and what ran it:\n\n"
        + "\n".join(_how(s) for s in http["scenarios"] if s["server"] == "peer")
    )


def _row(title: str, s: dict | None) -> str:
    if s is None:
        return f"| {title} | not run |" + " |" * 11
    if "failed" in s:
        kind = "not installed" if s["failed"].startswith("not installed") else "failed"
        return f"| {title} | **{kind}**: {s['failed'].removeprefix('not installed ')} |" + " |" * 11
    c1, c16 = _at(s, 1), _at(s, 16)
    answer = s.get("answer")
    said = f"{answer['label'] or 'abstained'} ({answer['probability']:.4f})" if answer else "n/a"
    cells = [
        _lat(c1, "p50"),
        _lat(c1, "p99"),
        _get(c16, "throughput_rps"),
        ", ".join(number(v) for v in c16.get("throughput_rps_rounds", [])) if c16 else "n/a",
        _lat(c16, "p99"),
        _get(c16, "server_cpu_ms_per_request"),
        _get(c16, "other_cpu_cores"),
        number(s.get("rss_peak_mb")),
        str(s.get("processes", "n/a")),
        number(s.get("ready_s")),
        said,
    ]
    flaky = f" ({s['failed_rounds']} round(s) failed)" if s.get("failed_rounds") else ""
    return f"| {title}{flaky} | " + " | ".join(cells) + " |"


def _ratios(results: dict) -> str:
    http = results["http"]
    checks = {t["name"]: t for t in results["targets"]}
    p1, p16 = peer_levels(http, 1), peer_levels(http, 16)
    if not p16:
        return "No peer server was measured in this run, so the peer targets are not measured."
    fastest = max(p16, key=lambda name: p16[name]["throughput_rps"])
    quickest = min(p1, key=lambda name: p1[name]["latency_ms"]["p50"]) if p1 else None
    lines = [
        f"- c=16 throughput, this service / the best peer ({fastest.removeprefix('peer: ')}): "
        + _verdict(checks.get("c=16 throughput vs the best peer server"), f">= {PEER_THROUGHPUT_X:g}x"),
        f"- c=1 p50, this service / the best peer's ({(quickest or 'n/a').removeprefix('peer: ')}): "
        + _verdict(checks.get("c=1 p50 vs the best peer server's"), f"<= {PEER_P50_X:g}x"),
        "- c=16 throughput, this service / the seed-style baseline: "
        + _verdict(checks.get("c=16 throughput vs seed-style baseline"), f">= {SEED_THROUGHPUT_X:g}x"),
        "- c=16 CPU per request, the most frugal peer's / this service's (independent of the CPU share each got): "
        + _verdict(
            checks.get("c=16 CPU per request: the most frugal peer's / the service's"), f">= {PEER_THROUGHPUT_X:g}x"
        ),
    ]
    return "\n".join(lines)


def _verdict(check: dict | None, wanted: str) -> str:
    if check is None or check["measured"] is None:
        return f"not measured (target {wanted})"
    met = "met" if check["met"] else "**missed**"
    return f"{check['measured']:.2f}x (target {wanted}: {met}, margin {check['margin']:+.0%})"


def _how(s: dict) -> str:
    return f"- **{s['name'].removeprefix('peer: ')}**: {s.get('how', '')}. Interpreter: {s.get('interpreter', 'n/a')}."


def _threads(results: dict) -> str:
    return str(results.get("machine", {}).get("usable_cpus", "n/a"))


def _at(s: dict, c: int) -> dict | None:
    return next((lv for lv in s["levels"] if lv["concurrency"] == c and lv["image"] == "png512"), None)


def _lat(level: dict | None, key: str) -> str:
    return number(level["latency_ms"][key]) if level else "n/a"


def _get(level: dict | None, key: str) -> str:
    return number(level[key]) if level else "n/a"
