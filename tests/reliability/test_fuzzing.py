"""Schemathesis over the OpenAPI schema of a real server: no 5xx, no response off its schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.scenarios import fuzz

pytestmark = pytest.mark.slow
pytest.importorskip("schemathesis", reason="schemathesis (the dev extra) is not installed")


def test_fuzzing_finds_no_server_error_or_schema_violation(serve, model_dir: Path, tmp_path: Path) -> None:
    proc = serve(model_dir)
    result = fuzz(proc.url, max_examples=8, workdir=tmp_path, seed=1, max_time_s=90, phases="coverage,fuzzing")
    report = result["report"]
    assert result["exit_code"] == 0, result["output"]
    assert report["test_cases"]["with_failures"] == 0 and report["test_cases"]["errored"] == 0, result["output"]
    assert report["operations"]["tested"] == report["operations"]["total"] >= 16
    assert proc.alive_and_ready()
    assert '"msg":"unhandled error"' not in proc.output()


def test_fuzzing_with_an_api_key(serve, model_dir: Path, tmp_path: Path) -> None:
    key = "fuzz-key-0123456789abcdef"
    proc = serve(model_dir, API_KEY=key)
    result = fuzz(
        proc.url,
        max_examples=4,
        workdir=tmp_path,
        seed=2,
        max_time_s=60,
        phases="coverage",
        headers=(f"X-API-Key: {key}",),
    )
    assert result["exit_code"] == 0, result["output"]
    assert result["report"]["test_cases"]["with_failures"] == 0, result["output"]
    assert key not in proc.output()
