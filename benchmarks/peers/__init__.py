"""Peer servers: what a user would pick instead of this service, each serving the same int8 ONNX file
with the same decode/preprocess code and the same decision rule (service.inputs, service.card,
service.inference.decision), written the way its framework's docs recommend. `common` holds what they
share; each module is one framework; `install` builds their venvs (`make bench-peers`).

Nothing here is imported by the service, and nothing imports a framework at module level except that
framework's own module, which runs in that framework's venv.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    name: str  # the venv's suffix and the key in results.json
    title: str  # the report's row name
    module: str  # `python -m MODULE --model-dir DIR --host H --port P`
    packages: tuple[str, ...]  # distribution names, specs from pyproject's `serve` and `bench-peers` extras
    imports: str  # the module whose presence says the framework is installed
    ready_path: str  # {model} is the card's name
    path: str  # the predict route ({model} is the card's name)
    body: str  # how the image travels: "raw" (the body), "multipart:FIELD", "kserve-v1" (base64 in JSON)
    how: str  # one line for the report: what the server does and with which knobs


PEERS = (
    Peer(
        "fastapi",
        "FastAPI + uvicorn",
        "benchmarks.peers.fastapi_peer",
        ("fastapi", "uvicorn"),
        "fastapi",
        "/health",
        "/predict",
        "raw",
        "plain `def` endpoint (FastAPI runs it in its threadpool), raw image body, one uvicorn worker",
    ),
    Peer(
        "bentoml",
        "BentoML",
        "benchmarks.peers.bentoml_peer",
        ("bentoml",),
        "bentoml",
        "/readyz",
        "/predict",
        "multipart:images",
        "`@bentoml.service` + `@bentoml.api(batchable=True, max_batch_size=8)` (adaptive batching), the image a "
        "multipart file (`Path`), one worker",
    ),
    Peer(
        "litserve",
        "LitServe",
        "benchmarks.peers.litserve_peer",
        ("litserve", "python-multipart"),
        "litserve",
        "/health",
        "/predict",
        "multipart:image",
        "`LitAPI` with `max_batch_size=8`, `batch_timeout=0.005` (dynamic batching), the image a multipart file, "
        "one CPU inference worker",
    ),
    Peer(
        "kserve",
        "KServe model server (v1)",
        "benchmarks.peers.kserve_peer",
        ("kserve",),
        "kserve",
        "/v1/models/{model}",
        "/v1/models/{model}:predict",
        "kserve-v1",
        "`kserve.Model` with a plain `predict` (KServe calls it on its event loop) + `ModelServer`, v1 protocol "
        "(base64 image in `instances`), one worker, gRPC off",
    ),
)
