"""LitServe, as its docs would have it: a `LitAPI` whose `setup` opens the model, `decode_request` turns
the uploaded file (multipart field `image`) into the model's input, LitServe's dynamic batching
(`max_batch_size=8`, `batch_timeout=5 ms`; its default `batch` stacks the arrays) feeds `predict`, and
`encode_response` answers each request. One inference worker on the CPU, LitServe's default API server.

`MODEL_DIR=models python -m benchmarks.peers.litserve_peer --port 8004`
POST /predict (multipart field `image`) -> {"label", "probability"}; GET /health -> 200 once ready.
"""

from __future__ import annotations

import litserve as ls

from benchmarks.peers.common import Model, arguments

MAX_BATCH, BATCH_TIMEOUT_S = 8, 0.005


class ChestCTAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = Model()

    def decode_request(self, request):
        return self.model.tensor(request["image"].file.read())

    def predict(self, batch):
        return self.model.run(batch)

    def encode_response(self, output: dict) -> dict:
        return output


def main() -> None:
    args = arguments(__doc__.split("\n")[0])
    api = ChestCTAPI(max_batch_size=MAX_BATCH, batch_timeout=BATCH_TIMEOUT_S)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host=args.host, port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
