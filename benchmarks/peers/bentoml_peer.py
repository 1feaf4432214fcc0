"""BentoML, as its docs would have it: a `@bentoml.service` class that opens the model in `__init__`,
one `@bentoml.api(batchable=True)` method, so BentoML's adaptive batching groups concurrent requests
into one call, and the image as a file (`pathlib.Path` with a ContentType: a multipart upload that
BentoML writes to a request-scoped temporary file). One worker (the service's default).

`MODEL_DIR=models bentoml serve benchmarks.peers.bentoml_peer:ChestCT --port 8003` (what
benchmarks.servers runs); POST /predict (multipart field `images`) -> [{"label", "probability"}];
GET /readyz -> 200 once the model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import ContentType

from benchmarks.peers.common import Model, threads

MAX_BATCH = 8  # as the LitServe peer's; BentoML's adaptive window chooses within it


@bentoml.service(workers=1, resources={"cpu": str(threads())}, traffic={"timeout": 30})
class ChestCT:
    def __init__(self) -> None:
        self.model = Model()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    def predict(self, images: list[Annotated[Path, ContentType("image/*")]]) -> list[dict]:
        return self.model.run(np.stack([self.model.tensor(path.read_bytes()) for path in images]))
