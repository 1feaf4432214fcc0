"""FastAPI + uvicorn, as FastAPI's docs would have it: a plain `def` path operation (FastAPI runs it in
its threadpool, so the blocking decode and ONNX Runtime call leave the event loop free), the model
opened once in the lifespan, the raw image as the request body, one uvicorn worker.

`MODEL_DIR=models python -m benchmarks.peers.fastapi_peer --port 8002`
POST /predict (PNG/JPEG body) -> {"label", "probability"}; GET /health -> 200 once the model is loaded.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated

import uvicorn
from fastapi import Body, FastAPI, HTTPException

from benchmarks.peers.common import Model, arguments
from service.errors import ServiceError


def create_app() -> FastAPI:
    state: dict[str, Model] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["model"] = Model()
        yield
        state.clear()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(image: Annotated[bytes, Body(media_type="image/png")]) -> dict:
        try:
            return state["model"].predict([image])[0]
        except ServiceError as exc:  # an undecodable image
            raise HTTPException(exc.status, str(exc)) from None

    return app


def main() -> None:
    args = arguments(__doc__.split("\n")[0])
    # uvicorn's defaults (its access log on: the service logs each request too)
    uvicorn.run(create_app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
