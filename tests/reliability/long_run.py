"""The long reliability run: `python -m tests.reliability.long_run` (about 20 minutes).

Runs every scenario long and on the real model (models/, or a tiny stand-in when there is none):
the bad-input corpus, schemathesis with stateful phases, overload at 3x measured capacity, a bomb
storm, SIGTERM with a crowd in flight, slow clients, broken models at start, and a soak at 70% of
capacity. Writes results/report.json and results/report.md; exits 1 when any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.harness.client import image_call
from benchmarks.harness.process import ServerProcess, start_service
from service.settings import Settings, available_cpus
from tests.reliability.bombs import bombs, json_number_flood
from tests.reliability.corpus import cases
from tests.reliability.rel_kit import REPO
from tests.reliability.scenarios import (
    bomb_storm,
    drain,
    fuzz,
    measure_capacity,
    overload,
    run_corpus,
    sequential_latency,
    slow_clients,
    soak,
    start_with,
)

RESULTS = Path(__file__).resolve().parent / "results"
REAL_DATA = REPO.parent / "shared" / "data" / "chest-ct-kaggle" / "Data"


def sample_image() -> tuple[bytes, str]:
    """A real CT slice when ../shared/data has one, else a synthetic PNG."""
    found = sorted(REAL_DATA.glob("test/*/*.png")) if REAL_DATA.is_dir() else []
    if found:
        return found[0].read_bytes(), str(found[0].relative_to(REPO.parent))
    from tests.reliability.corpus import png

    return png(512, 512), "synthetic 512x512 PNG"


class Run:
    def __init__(self, model_dir: Path, work: Path) -> None:
        self.model_dir, self.work = model_dir, work
        self.figures: dict[str, dict] = {}
        self.checks: list[tuple[str, bool, str]] = []

    def server(self, name: str, **env: str) -> ServerProcess:
        proc = start_service(self.model_dir, self.work / f"{name}.log", LOG_LEVEL="WARNING", **env)
        proc.wait_ready(120)
        return proc

    def check(self, name: str, ok: bool, detail: object = "") -> None:
        self.checks.append((name, bool(ok), str(detail)))
        print(f"  [{'pass' if ok else 'FAIL'}] {name} {detail if not ok else ''}", flush=True)

    def step(self, name: str, fn, *args) -> dict:
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        try:
            figures = fn(*args)
        except Exception as exc:  # a scenario that crashes is a failed check, and the run goes on
            figures = {"crashed": f"{type(exc).__name__}: {exc}"}
            self.check(f"{name}: ran", False, figures["crashed"])
        figures["wall_s"] = round(time.perf_counter() - started, 1)
        self.figures[name] = figures
        return figures


def corpus_step(run: Run) -> dict:
    s = Settings()
    proc = run.server("corpus")
    try:
        result = run_corpus(proc, cases(s.max_body_bytes, s.max_pixels, s.max_batch_files))
    finally:
        proc.stop()
    run.check("corpus: every case got its status, no leak", not result["failures"], result["failures"])
    run.check("corpus: the same worker survived every case", result["same_worker"])
    run.check("corpus: no unhandled error logged", result["unhandled_errors_logged"] == 0)
    return result


def fuzz_step(run: Run, max_time_s: int) -> dict:
    proc = run.server("fuzz")
    folder = run.work / "fuzz"
    folder.mkdir()
    try:
        result = fuzz(proc.url, max_examples=40, workdir=folder, seed=None, max_time_s=max_time_s)
        alive = proc.alive_and_ready()
    finally:
        proc.stop()
    report = result["report"]
    cases_ = report.get("test_cases", {})
    run.check(
        "fuzz: no 5xx, no schema violation",
        result["exit_code"] == 0 and cases_.get("with_failures") == 0,
        result["output"][-1500:],
    )
    run.check("fuzz: worker alive after fuzzing", alive)
    return {
        "exit_code": result["exit_code"],
        "test_cases": cases_,
        "operations": report.get("operations"),
        "seed": report.get("seed"),
        "stop_reason": report.get("stop_reason"),
    }


def overload_step(run: Run, call, hold_s: float) -> dict:
    proc = run.server("overload")
    try:
        base = sorted(r.latency for r in sequential_latency(proc.port, call, 40))[20] * 1000
        capacity = measure_capacity(proc.port, call, workers=8, seconds=10.0)
        result = overload(
            proc.port,
            call,
            capacity["rps"],
            factor=3.0,
            ramp_s=15.0,
            hold_s=hold_s,
            baseline_ms=base,
            recover_limit_s=30.0,
        )
        alive = proc.alive_and_ready()
    finally:
        proc.stop()
    timeout_ms = Settings().request_timeout_s * 1000
    run.check("overload: only 200/429/503", not result["other_statuses"], result["other_statuses"])
    run.check("overload: no connection errors", result["transport_errors"] == 0, result["tally"])
    run.check("overload: every refusal has Retry-After", result["refused_without_retry_after"] == 0)
    run.check(
        "overload: accepted latency within the request deadline",
        result["accepted_latency"]["max_ms"] <= timeout_ms,
        result["accepted_latency"],
    )
    run.check(
        "overload: back to baseline latency within 5 s",
        result["recovered_after_s"] is not None and result["recovered_after_s"] <= 5.0,
        result["recovered_after_s"],
    )
    run.check("overload: worker alive", alive)
    return {"capacity": capacity, **result}


def bombs_step(run: Run) -> dict:
    proc = run.server("bombs")
    try:
        result = bomb_storm(proc, bombs(), total=1000, concurrency=64)
    finally:
        proc.stop()
    run.check("bombs: all refused", result["refused"] == result["bombs"], result["tally"])
    run.check("bombs: RSS under 500 MB", result["rss_peak_mb"] < 500, result["rss_peak_mb"])
    run.check("bombs: worker alive", result["worker_alive"])
    return result


def json_flood_step(run: Run) -> dict:
    body = Settings().max_body_bytes - 1024
    proc = run.server("json-flood")
    try:
        size = httpx.get(proc.url + "/v1/model").json()["input"]["size"]
        result = bomb_storm(proc, [json_number_flood(body, size)], total=256, concurrency=64)
    finally:
        proc.stop()
    growth = result["rss_peak_mb"] - result["rss_before_mb"]
    # 400 once parsed, or 503 when MAX_INFLIGHT_BODY_BYTES is spent (the body is then never read).
    statuses = result["tally"]["statuses"]
    run.check("JSON number flood: all refused", set(statuses) <= {400, 503} and sum(statuses.values()) == 256, statuses)
    run.check("JSON number flood: RSS under 500 MB", result["rss_peak_mb"] < 500, result["rss_peak_mb"])
    run.check(
        "JSON number flood: memory grows less than 3x the body budget",
        growth < 3 * Settings().max_inflight_body_bytes / 2**20,
        growth,
    )
    return {"body_mb": round(body / 2**20, 1), **result}


def drain_step(run: Run, call) -> dict:
    grace, timeout = 1.0, 10.0
    proc = run.server("drain", DRAIN_GRACE_S=str(grace), DRAIN_TIMEOUT_S=str(timeout), REQUEST_TIMEOUT_S="5")
    try:
        result = drain(proc, call, in_flight=96, slow_uploads=4, exit_limit_s=grace + timeout)
    finally:
        proc.stop()
    run.check("drain: each in-flight request got 200 or 503", result["other"] == 0, result["tally"])
    run.check("drain: none cut off", result["cut_off"] == 0, result["tally"])
    run.check("drain: slow uploads answered 408", all(s == 408 for s in result["slow_uploads"]), result["slow_uploads"])
    run.check(
        "drain: ready false at once",
        result["ready_status_after_sigterm"] == 503 and result["ready_false_after_ms"] < 500,
        result["ready_false_after_ms"],
    )
    run.check(
        "drain: exit 0 within the drain time",
        result["exit_code"] == 0 and result["exit_after_s"] <= grace + timeout + 2,
        (result["exit_code"], result["exit_after_s"]),
    )
    return result


def slow_step(run: Run, call) -> dict:
    proc = run.server("slow", HEADER_TIMEOUT_S="2", REQUEST_TIMEOUT_S="3", KEEPALIVE_S="2")
    try:
        result = slow_clients(proc, call, slow_headers=256, slow_bodies=32, idle=128, seconds=10.0, hold_limit_s=30)
    finally:
        proc.stop()
    normal = result["normal"]
    run.check(
        "slow clients: normal requests all 200",
        normal["tally"]["statuses"] == {200: normal["count"]} and not normal["tally"]["errors"],
        normal["tally"],
    )
    for kind in ("slow_headers", "slow_bodies", "idle"):
        run.check(
            f"slow clients: {kind} closed by the server",
            result[kind]["closed_by_server"] == result[kind]["count"],
            result[kind],
        )
    return result


def faults_step(run: Run) -> dict:
    from tests.reliability.test_model_faults import FAULTS
    from tests.service.svc_models import write_model_dir

    tiny = write_model_dir(run.work / "tiny", "binary")
    out = {}
    for name, (breaks, message) in FAULTS.items():
        folder = run.work / "faults" / name.replace(" ", "-")
        shutil.copytree(tiny, folder)
        breaks(folder)
        result = start_with(folder)
        ok = (
            result["exit_code"] == 1
            and result["seconds"] < 10
            and len(result["stderr_lines"]) == 1
            and message in result["stderr_lines"][0]
            and not result["port_opened"]
        )
        run.check(f"model fault: {name}", ok, result)
        out[name] = {k: result[k] for k in ("exit_code", "seconds", "port_opened")} | {
            "line": result["stderr_lines"][0] if result["stderr_lines"] else ""
        }
    return out


def soak_step(run: Run, call, seconds: float) -> dict:
    proc = run.server("soak")
    try:
        capacity = measure_capacity(proc.port, call, workers=8, seconds=10.0)
        result = soak(proc, call, rate_rps=0.7 * capacity["rps"], seconds=seconds, warmup_s=30.0, sample_every=5.0)
    finally:
        proc.stop()
    run.check("soak: no errors", result["errors"] == 0, result["tally"])
    run.check("soak: RSS drift under 5%", abs(result["rss_drift_pct"]) < 5.0, result["rss_drift_pct"])
    run.check(
        "soak: open descriptors flat",
        result["fds_idle_after"] <= result["fds_idle_before"] + 2,
        (result["fds_idle_before"], result["fds_idle_after"]),
    )
    return {"capacity_rps": capacity["rps"], **result}


def machine() -> dict:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return {
        "cpus": available_cpus(),
        "python": platform.python_version(),
        "git": sha.strip(),
        "loadavg_at_start": list(os.getloadavg()),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_report(run: Run, meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    failed = [c for c in run.checks if not c[1]]
    data = {
        "meta": meta,
        "passed": not failed,
        "checks": [{"name": n, "ok": ok, "detail": d if not ok else ""} for n, ok, d in run.checks],
        "figures": run.figures,
    }
    (out / "report.json").write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    (out / "report.md").write_text(markdown(data))


def markdown(data: dict) -> str:
    f, m = data["figures"], data["meta"]
    lines = [
        "# Reliability long run",
        "",
        f"{m['date']}, commit {m['git']}, {m['cpus']} CPUs (shared, noisy), load average at start "
        f"{m['loadavg_at_start'][0]:.2f}; model: {m['model']}; request image: {m['image']}.",
        "",
        f"**{sum(c['ok'] for c in data['checks'])}/{len(data['checks'])} checks passed.**",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]

    def row(name: str, value: object) -> None:
        lines.append(f"| {name} | {value} |")

    if "corpus" in f and "cases" in f["corpus"]:
        c = f["corpus"]
        row("bad-input cases tried / passed", f"{c['cases']} / {c['passed']} (statuses {c['statuses']})")
    if "fuzz" in f and "test_cases" in f["fuzz"]:
        row(
            "schemathesis test cases / failures",
            f"{f['fuzz']['test_cases'].get('generated')} / "
            f"{f['fuzz']['test_cases'].get('with_failures')} (seed {f['fuzz']['seed']})",
        )
    if "overload" in f and "capacity" in f["overload"]:
        o = f["overload"]
        row("measured capacity (closed loop, 8 callers)", f"{o['capacity']['rps']} req/s")
        row(
            "overload offered / peak rate",
            f"{o['offered']} requests over {o['seconds']} s, up to {o['offered_rps_peak']} req/s",
        )
        row("overload answers", f"{o['tally']['statuses']}, transport errors {o['transport_errors']}")
        row("accepted throughput under overload", f"{o['accepted_rps']} req/s")
        row("accepted latency p50 / p99 / max", "{p50_ms} / {p99_ms} / {max_ms} ms".format(**o["accepted_latency"]))
        row("refusal latency p50 / p99", "{p50_ms} / {p99_ms} ms".format(**o["refused_latency"]))
        row("back to baseline after the ramp", f"{o['recovered_after_s']} s (baseline {o['baseline_ms']} ms)")
    if "bombs" in f and "bombs" in f["bombs"]:
        b = f["bombs"]
        row("bombs sent / refused", f"{b['bombs']} ({b['kinds']} kinds, {b['concurrency']} at once) / {b['refused']}")
        row("RSS before / peak / after bombs", f"{b['rss_before_mb']} / {b['rss_peak_mb']} / {b['rss_after_mb']} MB")
    if "json flood" in f and "bombs" in f["json flood"]:
        j = f["json flood"]
        row(
            "OIP number floods sent / refused",
            f"{j['bombs']} bodies of {j['body_mb']} MB, {j['concurrency']} at once / {j['tally']['statuses']}",
        )
        row("RSS before / peak during the floods", f"{j['rss_before_mb']} / {j['rss_peak_mb']} MB")
    if "drain" in f and "tally" in f["drain"]:
        d = f["drain"]
        row(
            "SIGTERM with in flight",
            f"{d['in_flight']}: {d['ok']} x 200, {d['refused_503']} x 503, "
            f"{d['cut_off']} cut off; slow uploads {d['slow_uploads']}",
        )
        row(
            "ready false after SIGTERM / exit",
            f"{d['ready_false_after_ms']} ms / code {d['exit_code']} "
            f"after {d['exit_after_s']} s (limit {d['exit_limit_s']} s)",
        )
    if "slow clients" in f and "normal" in f["slow clients"]:
        s = f["slow clients"]
        row(
            "slow clients (headers / bodies / silent)",
            f"{s['slow_headers']['count']} / {s['slow_bodies']['count']} / "
            f"{s['idle']['count']}, held at most {s['slow_headers']['max_held_s']} / "
            f"{s['slow_bodies']['max_held_s']} / {s['idle']['max_held_s']} s",
        )
        row("normal requests meanwhile", f"{s['normal']['tally']['statuses']}, p95 {s['normal']['p95_ms']} ms")
    if "model faults" in f:
        worst = max(
            (v["seconds"] for v in f["model faults"].values() if isinstance(v, dict) and "seconds" in v), default=0
        )
        row(
            "broken models refused at start",
            f"{len(f['model faults']) - 1} kinds, slowest exit {worst} s, port never opened",
        )
    if "soak" in f and "requests" in f["soak"]:
        s = f["soak"]
        row(
            "soak",
            f"{s['seconds']} s at {s['rate_rps']} req/s (70% of {s['capacity_rps']}): {s['requests']} requests, "
            f"{s['errors']} errors, p99 {s['latency']['p99_ms']} ms",
        )
        row("soak RSS start / end / drift", f"{s['rss_start_mb']} / {s['rss_end_mb']} MB / {s['rss_drift_pct']}%")
        row("soak RSS each minute (MB)", ", ".join(str(v) for v in s["rss_mb_every_minute"]))
        row(
            "soak open fds idle before / after, during min-max",
            f"{s['fds_idle_before']} / {s['fds_idle_after']}, {s['fds_during_min_max']}",
        )
    lines += ["", "## Checks", ""]
    lines += [
        f"- [{'x' if c['ok'] else ' '}] {c['name']}" + (f": {c['detail'][:300]}" if not c["ok"] else "")
        for c in data["checks"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.long_run", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument("--overload-hold-s", type=float, default=45.0)
    parser.add_argument("--fuzz-s", type=int, default=180)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    image, image_name = sample_image()
    call = image_call(image)
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        work = Path(tmp)
        model_dir, model_name = args.model_dir, str(args.model_dir)
        if not (model_dir / "model.json").is_file():
            from tests.service.svc_models import write_model_dir

            model_dir = write_model_dir(work / "stand-in", "binary", slow_layers=6)
            model_name = f"tiny stand-in (no card in {args.model_dir})"
        meta = machine() | {"model": model_name, "image": image_name}
        run = Run(model_dir, work)
        run.step("corpus", corpus_step, run)
        run.step("fuzz", fuzz_step, run, args.fuzz_s)
        run.step("overload", overload_step, run, call, args.overload_hold_s)
        run.step("bombs", bombs_step, run)
        run.step("json flood", json_flood_step, run)
        run.step("drain", drain_step, run, call)
        run.step("slow clients", slow_step, run, call)
        run.step("model faults", faults_step, run)
        run.step("soak", soak_step, run, call, args.soak_s)
        write_report(run, meta, args.out)
    failed = [c for c in run.checks if not c[1]]
    print(f"{len(run.checks) - len(failed)}/{len(run.checks)} checks passed; report: {args.out / 'report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
