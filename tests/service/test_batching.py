"""The micro-batcher: batches form under concurrency, admission is bounded, deadlines drop work."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.errors import InferenceFailed, NotReady, Overloaded
from service.inference.batching import Batcher
from service.observability.metrics import Metrics


class FakeModel:
    """logits = the image's mean value; records every batch it runs."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.batches: list[list[float]] = []

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        means = batch.mean(axis=(1, 2, 3))
        self.batches.append(means.tolist())
        return means[:, None], np.repeat(means[:, None, None, None], 4, axis=2), 10 * means


def image(value: float) -> np.ndarray:
    return np.full((1, 4, 4), value, np.float32)


def make(model: FakeModel, **kw) -> Batcher:
    options = {"max_batch": 4, "max_wait_s": 0.002, "capacity": 16, "metrics": Metrics()} | kw
    return Batcher(model, **options)


async def infer_one(batcher: Batcher, value: float) -> float:
    with batcher.admit() as ticket:
        out = await batcher.infer(ticket, image(value))
        return float(out.logits[0])


def test_each_image_gets_its_own_ood_score_from_its_batch() -> None:
    async def main() -> list[tuple[float, float | None]]:
        batcher = make(FakeModel(delay=0.02))
        batcher.start()

        async def one(value: float) -> tuple[float, float | None]:
            with batcher.admit() as ticket:
                out = await batcher.infer(ticket, image(value))
                return float(out.logits[0]), out.ood_score

        results = await asyncio.gather(*(one(float(v)) for v in range(6)))
        await batcher.close(1)
        return results

    assert asyncio.run(main()) == [(float(v), pytest.approx(10.0 * v)) for v in range(6)]


def test_concurrent_requests_are_batched_and_answered_in_place() -> None:
    model = FakeModel(delay=0.03)

    async def main() -> list[float]:
        batcher = make(model)
        batcher.start()
        results = await asyncio.gather(*(infer_one(batcher, float(v)) for v in range(10)))
        await batcher.close(1)
        return results

    assert asyncio.run(main()) == [float(v) for v in range(10)]
    sizes = [len(b) for b in model.batches]
    assert sum(sizes) == 10 and max(sizes) <= 4 and max(sizes) > 1


def test_batching_off_runs_each_image_alone() -> None:
    model = FakeModel()

    async def main() -> list[float]:
        batcher = make(model, max_batch=1)
        batcher.start()
        results = await asyncio.gather(*(infer_one(batcher, float(v)) for v in range(5)))
        await batcher.close(1)
        return results

    assert asyncio.run(main()) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(len(b) == 1 for b in model.batches)


def test_admission_is_bounded() -> None:
    async def main() -> None:
        batcher = make(FakeModel(), capacity=2)
        batcher.start()
        with batcher.admit(2):
            with pytest.raises(Overloaded) as info, batcher.admit():
                pass
            assert info.value.retry_after >= 1
        with batcher.admit(2):  # released again
            pass
        await batcher.close(1)

    asyncio.run(main())


def test_a_cancelled_request_is_dropped_before_it_runs() -> None:
    gate = threading.Event()
    model = FakeModel(gate=gate)

    async def main() -> None:
        batcher = make(model, max_batch=1 + 1, max_wait_s=0.0)
        batcher.start()
        first = asyncio.create_task(infer_one(batcher, 1.0))
        await asyncio.sleep(0.05)  # the first batch is now running, held by the gate
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await infer_one(batcher, 2.0)
        gate.set()
        assert await first == 1.0
        await batcher.close(1)

    asyncio.run(main())
    assert model.batches == [[1.0]]


def test_close_drains_then_refuses() -> None:
    model = FakeModel(delay=0.02)

    async def main() -> None:
        batcher = make(model)
        batcher.start()
        tasks = [asyncio.create_task(infer_one(batcher, float(v))) for v in range(6)]
        await asyncio.sleep(0)
        await batcher.close(5)
        assert [await t for t in tasks] == [float(v) for v in range(6)]
        with pytest.raises(NotReady), batcher.admit():
            pass

    asyncio.run(main())


def test_a_failing_batch_fails_its_requests_only() -> None:
    class Broken(FakeModel):
        def __call__(self, batch):
            raise RuntimeError("kaboom")

    async def main() -> None:
        batcher = make(Broken())
        batcher.start()
        with pytest.raises(InferenceFailed) as info:
            await infer_one(batcher, 1.0)
        assert info.value.status == 500 and "kaboom" not in info.value.detail
        await batcher.close(1)

    asyncio.run(main())


def test_a_batch_of_two_models_runs_each_image_on_its_own_model() -> None:
    """Right after a swap, images of the old and the new model may queue together: each runs on the
    model its request took, in sub-batches by model."""

    async def main() -> list[float]:
        old, new = FakeModel(delay=0.02), FakeModel(delay=0.02)
        batcher = make(FakeModel(), max_batch=8)
        batcher.start()

        async def one(value: float, model: FakeModel) -> float:
            with batcher.admit() as ticket:
                return float((await batcher.infer(ticket, image(value), model)).logits[0])

        blocker = asyncio.ensure_future(one(0.0, old))  # keeps the worker busy while the rest queue
        await asyncio.sleep(0.005)
        values = await asyncio.gather(*(one(float(v), old if v % 2 else new) for v in range(1, 7)))
        await blocker
        await batcher.close(1)
        assert sorted(v for batch in old.batches for v in batch) == [0.0, 1.0, 3.0, 5.0]
        assert sorted(v for batch in new.batches for v in batch) == [2.0, 4.0, 6.0]
        assert len(new.batches) == 1 and old.batches[-1] == [1.0, 3.0, 5.0]  # one sub-batch per model
        return values

    assert asyncio.run(main()) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
