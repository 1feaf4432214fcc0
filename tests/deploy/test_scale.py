"""The horizontal-scale run's bounded form (benchmarks.scale): Caddy with the committed Caddyfile in front
of two service processes; one gets SIGTERM mid-run and no request fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import scale
from benchmarks.proxy import caddy_binary
from tests.service.svc_models import write_model_dir

pytestmark = pytest.mark.skipif(caddy_binary() is None, reason="caddy is not installed (deploy/ci_tools.sh)")


def test_two_processes_share_the_load_and_one_stops_without_a_failed_request(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "models", "binary")
    results = scale.run(model_dir, tmp_path / "work", seconds=2.0, only_stop=True, quiet_wait_s=0)
    stop = results["stop"]
    assert stop["requests"] > 100 and stop["failed"] == 0, stop["statuses"]
    first, second = stop["answered_by_process"]
    assert first > 20 and second > first  # both served; the survivor took over after the stop
    stopped = stop["stopped"]
    assert stopped["exit_code"] == 0  # drained, then a clean exit
    # Ready turned 503 at once; the proxy's health check took the process out within its interval
    # (1 s), well before the listener closed at DRAIN_GRACE_S (2 s).
    assert stopped["last_answer_after_sigterm_s"] < float(scale.DRAIN["DRAIN_GRACE_S"])
    assert stopped["exited_after_s"] >= float(scale.DRAIN["DRAIN_GRACE_S"])
    machine = {"usable_cpus": 2, "cpu_model": "x"}
    text = scale.report({**results, "smoke": True, "model": "fixture", "machine": machine, "loadavg_after": [0, 0, 0]})
    assert "| 2 processes x 1 thread, proxy, one stopped |" in text and "0 failed requests" in text
