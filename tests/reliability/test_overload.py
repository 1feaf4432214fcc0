"""Overload at about 3x measured capacity, and a storm of decompression bombs, against a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.client import image_call
from tests.reliability.bombs import bombs, json_number_flood
from tests.reliability.corpus import png
from tests.reliability.scenarios import bomb_storm, measure_capacity, overload, sequential_latency

pytestmark = pytest.mark.slow
REQUEST_TIMEOUT_S = 3.0


def test_overload_at_three_times_capacity(serve, slow_models: Path) -> None:
    proc = serve(
        slow_models, QUEUE_MAX="16", REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S), INFER_THREADS="1", DECODE_THREADS="1"
    )
    call = image_call(png(256, 256))
    baseline = sorted(r.latency for r in sequential_latency(proc.port, call, 20))[10] * 1000
    capacity = measure_capacity(proc.port, call, workers=8, seconds=3.0)
    assert capacity["rps"] > 5, capacity
    result = overload(
        proc.port, call, capacity["rps"], factor=3.0, ramp_s=2.0, hold_s=4.0, baseline_ms=baseline, recover_limit_s=10.0
    )
    print(capacity, result)
    assert result["transport_errors"] == 0, result  # no resets, no refused or dropped connections
    assert result["other_statuses"] == [], result  # only 200, 429 and 503
    assert result["refused"] > 0 and result["refused_without_retry_after"] == 0, result
    assert result["accepted_rps"] >= 0.25 * capacity["rps"], result  # overload does not stop the serving
    assert result["accepted_latency"]["max_ms"] <= (REQUEST_TIMEOUT_S + 1.0) * 1000, result
    assert result["recovered_after_s"] is not None and result["recovered_after_s"] <= 5.0, result
    assert proc.alive_and_ready()


def test_json_number_flood_does_not_multiply_memory(serve, model_dir: Path) -> None:
    """OIP bodies full of numbers stay raw until their shape is checked: memory grows about as much as
    the bodies themselves (as Python floats it was about 9x: 4.7 GB for 64 bodies of 8 MiB)."""
    body = 2 * 1024 * 1024
    proc = serve(model_dir, MAX_BODY_BYTES=str(body + 1024))
    result = bomb_storm(proc, [json_number_flood(body, 64)], total=96, concurrency=32)
    print(result)
    assert result["tally"]["statuses"] == {400: 96}, result
    growth = result["rss_peak_mb"] - result["rss_before_mb"]
    assert growth < 4 * 32 * body / 2**20, result  # 32 bodies in flight: under 4x their size
    assert result["worker_alive"]


def test_decompression_bomb_storm(serve, model_dir: Path) -> None:
    proc = serve(model_dir)
    result = bomb_storm(proc, bombs(), total=150, concurrency=24)
    print(result)
    assert result["refused"] == result["bombs"], result
    assert result["tally"]["errors"] == {}, result
    assert result["rss_peak_mb"] < 500, result
    assert result["worker_alive"]
