"""KServe's Python model server, as its custom-model docs would have it: a `kserve.Model` whose `load`
opens the model (called from `__init__`, so it is ready at start), a `predict` that reads the image from
the v1 protocol's `{"instances": [{"image": {"b64": ...}}]}`, and `ModelServer().start([model])`: one
uvicorn worker, gRPC off (the load client speaks HTTP only). KServe binds 0.0.0.0 itself; the benchmark
sends only to 127.0.0.1.

`MODEL_DIR=models python -m benchmarks.peers.kserve_peer --port 8005`
POST /v1/models/chest-cancer-net:predict -> {"predictions": [{"label", "probability"}]};
GET /v1/models/chest-cancer-net -> 200 once ready.
"""

from __future__ import annotations

import base64

from kserve import Model as KServeModel
from kserve import ModelServer

from benchmarks.peers.common import Model, arguments


class ChestCT(KServeModel):
    def __init__(self) -> None:
        self.model: Model | None = None
        super().__init__(Model.card_name())
        self.load()

    def load(self) -> bool:
        self.model = Model()
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        images = [base64.b64decode(instance["image"]["b64"]) for instance in payload["instances"]]
        return {"predictions": self.model.predict(images)}


def main() -> None:
    args = arguments(__doc__.split("\n")[0])
    ModelServer(http_port=args.port, enable_grpc=False, workers=1).start([ChestCT()])


if __name__ == "__main__":
    main()
