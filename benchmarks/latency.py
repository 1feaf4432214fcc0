"""Runs the pytest-benchmark suite (benchmarks/test_model_latency.py) in its own process and reduces
its JSON to medians in milliseconds and the speed-ups between backends from that same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "benchmarks/test_model_latency.py"
FULL_ARGS = ("--benchmark-min-rounds=7", "--benchmark-max-time=2.0")
SMOKE_ARGS = ("--benchmark-min-rounds=1", "--benchmark-max-time=0.001", "--benchmark-warmup=off")


class LatencySuiteFailed(RuntimeError):
    pass


def run_latency(model_dir: Path, checkpoint: Path, samples: Path, work: Path, smoke: bool) -> dict:
    """The `latency` section of the results: one row per benchmark, and the backend ratios."""
    raw = work / "pytest-benchmark.json"
    env = {**os.environ, "BENCH_MODEL_DIR": str(model_dir), "BENCH_CHECKPOINT": str(checkpoint)}
    env["BENCH_SAMPLES"] = str(samples)
    argv = [sys.executable, "-m", "pytest", SUITE, "-q", "-p", "no:cacheprovider", f"--benchmark-json={raw}"]
    argv += [*(SMOKE_ARGS if smoke else FULL_ARGS), "--benchmark-sort=name", "--benchmark-columns=median,iqr,rounds"]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    (work / "pytest-benchmark.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not raw.is_file():
        raise LatencySuiteFailed(f"the latency suite failed (exit {done.returncode}):\n{done.stdout[-4000:]}")
    rows = [_row(bench) for bench in json.loads(raw.read_text())["benchmarks"]]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    return {"rows": rows, "ratios": ratios(rows), "skipped": skipped}


def _row(bench: dict) -> dict:
    stats, info = bench["stats"], dict(bench["extra_info"])
    ms = {key: round(stats[key] * 1000.0, 4) for key in ("median", "min", "mean", "iqr")}
    return {"name": bench["name"], "group": bench["group"], **info, **{f"{k}_ms": v for k, v in ms.items()}} | {
        "rounds": stats["rounds"]
    }


def ratios(rows: list[dict]) -> list[dict]:
    """Per (batch, threads): how many times faster each ONNX Runtime variant is than torch eager,
    and int8 than fp32, from the medians of this run."""
    median = {(r["backend"], r["batch"], r["threads"]): r["median_ms"] for r in rows if r.get("kind") == "inference"}
    out = []
    for batch, threads in sorted({(b, t) for _, b, t in median}):
        torch_ms = median.get(("torch-eager", batch, threads))
        int8_ms, fp32_ms = median.get(("ort-int8", batch, threads)), median.get(("ort-fp32", batch, threads))
        out.append(
            {
                "batch": batch,
                "threads": threads,
                "torch_over_int8": _ratio(torch_ms, int8_ms),
                "torch_over_fp32": _ratio(torch_ms, fp32_ms),
                "fp32_over_int8": _ratio(fp32_ms, int8_ms),
            }
        )
    return out


def _ratio(slow: float | None, fast: float | None) -> float | None:
    return round(slow / fast, 2) if slow and fast else None
