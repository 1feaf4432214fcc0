"""Fixtures for the latency benchmarks: the model pair, the sample images, sessions and torch.

`python -m benchmarks` points these at its model and samples through BENCH_* variables. Run alone
(`pytest benchmarks/`), they use models/ and artifacts/model.pt when both exist, and otherwise
build the small stand-in model (benchmarks.tinymodel) once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.machine import busy_cpu_s, self_cpu_s
from benchmarks.samples import FORMATS, write_samples
from service.card import ModelCard, golden_input, read_card
from service.inference.engine import Engine
from service.inputs.imaging import load_tensor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model folder, torch checkpoint) holding the same weights."""
    env_dir, env_ckpt = os.environ.get("BENCH_MODEL_DIR"), os.environ.get("BENCH_CHECKPOINT")
    if env_dir and env_ckpt:
        return Path(env_dir), Path(env_ckpt)
    if (REPO / "models" / "model.json").is_file() and (REPO / "artifacts" / "model.pt").is_file():
        return REPO / "models", REPO / "artifacts" / "model.pt"
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([sys.executable, "-m", "benchmarks.tinymodel", str(out)], cwd=REPO, check=True, timeout=600)
    return out / "models", out / "model.pt"


@pytest.fixture(scope="session")
def card(model_pair: tuple[Path, Path]) -> ModelCard:
    return read_card(model_pair[0])


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = os.environ.get("BENCH_SAMPLES")
    if folder:
        return {name: next(Path(folder).glob(f"{name}.*")).read_bytes() for name in FORMATS}
    samples = write_samples(tmp_path_factory.mktemp("samples"))
    return {name: sample.path.read_bytes() for name, sample in samples.items()}


@pytest.fixture(scope="session")
def batch_of(images: dict[str, bytes], card: ModelCard) -> Callable[[int], np.ndarray]:
    """(N, 1, S, S) model inputs: the three sample images, preprocessed and repeated to N."""
    tensors = [load_tensor(images[name], card.input) for name in FORMATS]
    return lambda n: np.ascontiguousarray(np.stack([tensors[i % len(tensors)] for i in range(n)]))


@pytest.fixture(scope="session")
def engines(model_pair: tuple[Path, Path]) -> Callable[[str, int], Engine]:
    """The service's own Engine (same session options), one per (variant, threads), opened once."""
    opened: dict[tuple[str, int], Engine] = {}

    def get(variant: str, threads: int) -> Engine:
        if (variant, threads) not in opened:
            opened[variant, threads] = Engine.open(model_pair[0], variant, threads)
        return opened[variant, threads]

    return get


@pytest.fixture(scope="session")
def torch_model(model_pair: tuple[Path, Path], card: ModelCard):
    """The torch eager model; skips where torch is not installed, fails unless it holds the same
    weights as the ONNX files (it must reproduce the card's fp32 golden logits)."""
    torch = pytest.importorskip("torch", reason="torch is not installed (the `train` extra): no torch eager case")
    from training.model import load_checkpoint

    if not model_pair[1].is_file():
        pytest.skip(f"no torch checkpoint at {model_pair[1]}")
    model = load_checkpoint(model_pair[1])[0]
    with torch.inference_mode():
        logits = model(torch.from_numpy(golden_input(card.input.size)))[0].numpy()[0]
    expected = np.asarray(card.golden.logits["fp32"], dtype=np.float32)
    if not np.allclose(logits, expected, atol=card.golden.atol["fp32"]):
        pytest.fail(
            f"{model_pair[1]} does not hold the weights of {model_pair[0]}: golden logits {logits} != {expected}"
        )
    return model


@pytest.fixture(autouse=True)
def machine_noise(request: pytest.FixtureRequest) -> Iterator[None]:
    """Records, per benchmark, how many CPUs other processes kept busy while it ran."""
    start = (time.perf_counter(), busy_cpu_s(), self_cpu_s())
    yield
    wall, busy, own = (b - a for a, b in zip(start, (time.perf_counter(), busy_cpu_s(), self_cpu_s()), strict=True))
    bench = request.node.funcargs.get("benchmark")
    if bench is not None and wall > 0:
        bench.extra_info["other_cpu_cores"] = round(max(0.0, busy - own) / wall, 2)
