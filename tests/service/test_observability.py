"""Metrics appear and count; one JSON access-log line per request; overload and deadlines via HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from service.app import create_app
from service.observability.logs import JsonFormatter
from service.settings import Settings
from tests.service.svc_kit import assert_error, png_bytes, serve_in_thread


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        found = re.fullmatch(re.escape(name) + r"(?:\{(.*)\})? (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found.group(1) or "")) == labels:
            return float(found.group(2))
    return 0.0


def test_metrics_appear_and_count(model_dir: Path) -> None:
    with TestClient(create_app(Settings(model_dir=model_dir, threads=1)), raise_server_exceptions=False) as c:
        for value in (240, 240, 5):
            assert c.post("/v1/predict", content=png_bytes(value)).status_code == 200
        c.post("/v1/predict", content=b"GIF89a....")
        text = c.get("/metrics").text
    assert metric(text, "chestnet_http_requests_total", route="/v1/predict", method="POST", status="200") == 3
    assert metric(text, "chestnet_http_requests_total", route="/v1/predict", method="POST", status="415") == 1
    assert metric(text, "chestnet_http_request_duration_seconds_bucket", route="/v1/predict", le="0.001") >= 0
    assert metric(text, "chestnet_http_request_duration_seconds_bucket", route="/v1/predict", le="10.0") == 4
    assert metric(text, "chestnet_predictions_total", label="adenocarcinoma") == 2
    assert metric(text, "chestnet_predictions_total", label="normal") == 1
    assert metric(text, "chestnet_positive_probability_count") == 3
    assert metric(text, "chestnet_errors_total", code="unsupported_media_type") == 1
    assert metric(text, "chestnet_decode_duration_seconds_count") == 3
    assert metric(text, "chestnet_queue_wait_seconds_count") == 3
    assert metric(text, "chestnet_inference_duration_seconds_count") >= 1
    assert metric(text, "chestnet_batch_size_count") >= 1
    assert "chestnet_inference_in_flight 0.0" in text and "chestnet_queue_depth 0.0" in text
    assert "chestnet_http_requests_in_flight" in text
    info = re.search(r"^chestnet_model_info\{(.*)\} 1\.0$", text, re.MULTILINE)
    assert info is not None
    labels = dict(re.findall(r'(\w+)="([^"]*)"', info.group(1)))
    assert labels.pop("sha256") and labels == {
        "role": "primary",
        "name": "chest-cancer-net",
        "version": "0.0.0-test",
        "variant": "int8",
    }
    assert metric(text, "process_resident_memory_bytes") > 0


def test_one_json_access_line_per_request(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    with TestClient(create_app(Settings(model_dir=model_dir, threads=1))) as c:
        caplog.clear()
        c.post("/v1/predict", content=png_bytes(240), headers={"X-Request-ID": "trace-42"})
    records = [r for r in caplog.records if r.name == "service.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["msg"] == "request" and line["request_id"] == "trace-42" and line["route"] == "/v1/predict"
    assert line["status"] == 200 and line["label"] == "adenocarcinoma" and line["latency_ms"] > 0
    assert "\n" not in JsonFormatter().format(records[0])


def _burst(settings: Settings, count: int) -> list[httpx.Response]:
    """`count` concurrent predictions against a real server."""

    async def main(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            body = png_bytes(200)
            return await asyncio.gather(*(c.post("/v1/predict", content=body) for _ in range(count)))

    with serve_in_thread(settings) as url:
        return asyncio.run(main(url))


def test_full_queue_answers_503_with_retry_after(slow_model_dir: Path) -> None:
    settings = Settings(model_dir=slow_model_dir, model_variant="fp32", threads=1, queue_max=2, batching=False)
    responses = _burst(settings, 8)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 2 and 503 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert_error(refused, 503, "overloaded")
    assert int(refused.headers["retry-after"]) >= 1


def test_deadline_answers_503(slow_model_dir: Path) -> None:
    settings = Settings(model_dir=slow_model_dir, model_variant="fp32", threads=1, request_timeout_s=0.15)
    responses = _burst(settings, 6)
    late = [r for r in responses if r.status_code == 503]
    assert late, [r.status_code for r in responses]
    assert_error(late[0], 503, "deadline_exceeded")
    assert "retry-after" in late[0].headers
