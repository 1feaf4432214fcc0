"""Model latency (pytest-benchmark): decoding and preprocessing per image format, and inference per
backend x batch x threads on the same weights: ONNX Runtime INT8 and FP32 through the service's own
Engine, and torch eager (skipped with a reason where torch is absent).

Run by `python -m benchmarks`, or alone: `pytest benchmarks/test_model_latency.py`.
"""

from __future__ import annotations

import pytest

from benchmarks.samples import FORMATS
from service.inputs.imaging import decode, load_tensor

BACKENDS = ("ort-int8", "ort-fp32", "torch-eager")
BATCHES = (1, 8, 32)
THREADS = (1, 2)
WARMUP_CALLS = 3  # first calls build kernels and caches for each new input shape


@pytest.mark.parametrize("name", FORMATS)
def test_decode(benchmark, images, name: str) -> None:
    data = images[name]
    benchmark.group = "decode"
    benchmark.extra_info.update(kind="decode", image=name, bytes=len(data))
    grey = benchmark(decode, data)
    assert grey.mode == "L"


@pytest.mark.parametrize("name", FORMATS)
def test_decode_preprocess(benchmark, images, card, name: str) -> None:
    data = images[name]
    benchmark.group = "decode + preprocess"
    benchmark.extra_info.update(kind="decode+preprocess", image=name, bytes=len(data))
    tensor = benchmark(load_tensor, data, card.input)
    assert tensor.shape == (1, card.input.size, card.input.size)


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"t{t}")
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("backend", BACKENDS)
def test_inference(benchmark, request, batch_of, backend: str, batch: int, threads: int) -> None:
    x = batch_of(batch)
    run = _torch_runner(request, threads) if backend == "torch-eager" else _ort_runner(request, backend, threads)
    for _ in range(WARMUP_CALLS):
        run(x)
    benchmark.group = f"inference batch {batch}, {threads} thread{'s' if threads > 1 else ''}"
    benchmark.extra_info.update(kind="inference", backend=backend, batch=batch, threads=threads)
    logits = benchmark(run, x)
    assert logits.shape[0] == batch


def _ort_runner(request, backend: str, threads: int):
    engine = request.getfixturevalue("engines")(backend.removeprefix("ort-"), threads)
    return lambda x: engine.run(x)[0]


def _torch_runner(request, threads: int):
    model = request.getfixturevalue("torch_model")
    import torch

    torch.set_num_threads(threads)

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x))[0].numpy()

    return run


def test_trust_layer(benchmark, card, model_pair, engines, batch_of) -> None:
    """What the trust layer adds to one image beside the model: its OOD score from the model's outputs,
    the verdict, its grey-level histogram and the drift window's update (service.inference.runtime)."""
    from service.trust.drift import GREY, DriftWindow, grey_shares
    from service.trust.gate import OodGate

    if card.ood is None or card.drift is None:
        pytest.skip("the model card has no OOD gate or drift reference")
    engine = engines("int8", 1)
    gate = OodGate.of(card, engine.ood_stats, "abstain")
    window = DriftWindow(card.drift, max_count=1000, max_age_s=3600.0)
    x = batch_of(1)
    logits, _, features = engine.run(x)
    cuts = window.cuts(GREY)

    def trust() -> float:
        score = gate.scores(logits, features)[0]
        verdict = gate.verdict(float(score))
        window.observe(grey_shares(x[0], card.input, cuts), verdict.score, 0.5)
        return verdict.score

    benchmark.group = "trust layer, per image"
    benchmark.extra_info.update(kind="trust", method=card.ood.method)
    assert benchmark(trust) > 0
