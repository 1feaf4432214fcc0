"""The report's model-refresh section: what a shadow candidate and model swaps cost the traffic, each
beside the same levels without them, from one run (benchmarks.load's shadow and reload scenarios)."""

from __future__ import annotations

from benchmarks.targets import SERVICE

SHADOW_PREFIX = "service + shadow"
RELOADS = "service (model reload every 0.5 s)"


def refresh_section(http: dict) -> str:
    scenarios = {s["name"]: s for s in http["scenarios"]}
    base = scenarios.get(SERVICE)
    shadows = [s for name, s in scenarios.items() if name.startswith(SHADOW_PREFIX)]
    reloads = scenarios.get(RELOADS)
    if base is None or not (shadows or reloads):
        return "## Model refresh\n\nNot measured in this run."
    rows = [
        "| scenario | c | p50 ms | p99 ms | req/s | req/s vs no shadow | p99 vs no shadow | RSS peak MB "
        "| compared / dropped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in [base, *shadows, *([reloads] if reloads else [])]:
        shadow = scenario.get("shadow")
        counted = f"{shadow['compared']} / {shadow['dropped']}" if shadow else "-"
        for level in scenario["levels"]:
            if level["image"] != "png512":
                continue
            plain = _level(base, level["concurrency"])
            rows.append(
                f"| {scenario['name']} | {level['concurrency']:g} | {_n(level['latency_ms']['p50'])} "
                f"| {_n(level['latency_ms']['p99'])} | {_n(level['throughput_rps'])} "
                f"| {_ratio(level['throughput_rps'], plain and plain['throughput_rps'])} "
                f"| {_ratio(level['latency_ms']['p99'], plain and plain['latency_ms']['p99'])} "
                f"| {_n(level['server_rss_peak_mb'])} | {counted} |"
            )
    notes = [
        "The shadow candidate is the served model itself (the same ResNet-18), run on one ONNX Runtime thread "
        "at nice +10 after the primary answered; comparisons its bounded queue cannot take are dropped, not waited for."
    ]
    if reloads and reloads.get("swaps"):
        swaps = reloads["swaps"]
        statuses = ", ".join(f"{k}: {v}" for k, v in swaps["statuses"].items())
        notes.append(
            f"Reloads during the c=16 level: {statuses}; median reload (read, sha256, session, self-test, swap) "
            f"{_n(swaps['median_reload_ms'])} ms."
        )
    return "## Model refresh: shadow and swaps (medians over rounds)\n\n" + "\n".join(rows) + "\n\n" + " ".join(notes)


def _level(scenario: dict, concurrency: int) -> dict | None:
    return next((lv for lv in scenario["levels"] if lv["concurrency"] == concurrency and lv["image"] == "png512"), None)


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
