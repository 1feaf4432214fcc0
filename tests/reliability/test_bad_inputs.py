"""The bad-input corpus against a real server: each case its expected status, never a 5xx, never a
leak in the error body, and the same worker alive and ready after every case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness.process import ServerProcess, start_service
from service.settings import Settings
from tests.reliability.corpus import cases
from tests.reliability.scenarios import check_case, send_case

DEFAULTS = Settings()
CORPUS = cases(DEFAULTS.max_body_bytes, DEFAULTS.max_pixels, DEFAULTS.max_batch_files)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_service(model_dir, tmp_path_factory.mktemp("corpus") / "server.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def test_the_corpus_is_broad() -> None:
    assert len(CORPUS) >= 20
    assert len({c.name for c in CORPUS}) == len(CORPUS)
    assert {c.expect for c in CORPUS} >= {200, 400, 404, 405, 413, 415, 422}


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_bad_input(server: ServerProcess, case) -> None:
    pid = server.pid
    status, headers, body, error = asyncio.run(send_case(server.port, case))
    assert check_case(case, status, headers, body, error) == []
    assert server.alive_and_ready() and server.pid == pid, server.output()[-2000:]


def test_no_unhandled_error_was_logged(server: ServerProcess) -> None:
    """Runs after the corpus (file order): nothing reached the catch-all 500 handler, and every log
    line (library warnings included) is one JSON object."""
    log = server.output()
    assert '"msg":"unhandled error"' not in log and "Traceback" not in log, log[-3000:]
    for line in log.splitlines():
        assert isinstance(json.loads(line), dict), line
