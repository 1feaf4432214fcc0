"""SIGTERM with dozens of requests in flight: each gets 200 or 503, none is cut off; ready turns
false at once; exit 0 within the configured time. (tests/service/test_server.py proves the work
finishes after SIGTERM with six requests; this is the crowded version.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.client import image_call
from tests.reliability.corpus import png
from tests.reliability.scenarios import drain

pytestmark = pytest.mark.slow


def test_sigterm_with_dozens_in_flight(serve, slow_models: Path) -> None:
    grace, timeout = 0.5, 8.0
    proc = serve(
        slow_models,
        QUEUE_MAX="24",
        INFER_THREADS="1",
        MODEL_VARIANT="fp32",
        REQUEST_TIMEOUT_S="2",
        DRAIN_GRACE_S=str(grace),
        DRAIN_TIMEOUT_S=str(timeout),
    )
    result = drain(proc, image_call(png(512, 512)), in_flight=48, slow_uploads=2, exit_limit_s=grace + timeout)
    print(result)
    assert result["cut_off"] == 0 and result["other"] == 0, result
    assert result["ok"] > 0 and result["ok"] + result["refused_503"] == 48, result
    assert result["slow_uploads"] == [408, 408], result  # a body still arriving gets its deadline, not a reset
    assert result["ready_status_after_sigterm"] == 503 and result["ready_false_after_ms"] < 500, result
    assert result["exit_code"] == 0, proc.output()[-3000:]
    assert result["exit_after_s"] <= grace + timeout + 2.0, result
