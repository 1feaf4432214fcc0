"""The seed-style baseline: how the original project served its model, rebuilt to be measured.

What it keeps from the original app.py: FastAPI + uvicorn (one worker, uvicorn's defaults), the image
as a multipart upload in the field `file`, and all the work inside an `async def` endpoint: PIL ->
torchvision transforms -> eager `model(x)` on the event loop, blocking it for the whole request, with
no batching, admission control or limits. What it does not keep, to be fair to it: the original
reloaded the model and wrote each upload to a fixed file name on every request; here the model is
loaded once, and the upload never touches disk.

It serves the same trained weights (artifacts/model.pt) with the card's size and normalisation (a plain
resize, as the original did, rather than the service's letterbox), with torch's own thread default.

`python -m benchmarks.seed_server --checkpoint artifacts/model.pt --model-dir models --port 8001`
POST /predict (multipart field `file`) -> {"label", "probability"}; GET / -> 200 once the model is loaded.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
import uvicorn
from fastapi import FastAPI, File, HTTPException, UploadFile
from PIL import Image
from torchvision import transforms

from service.card import read_card
from training.model import load_checkpoint


def create_app(checkpoint: Path, model_dir: Path) -> FastAPI:
    model, meta = load_checkpoint(checkpoint)
    if meta["task"] != "binary":
        raise SystemExit("seed_server: the baseline serves binary models only")
    spec, labels = read_card(model_dir).input, meta["labels"]
    transform = transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=1),
            transforms.Resize((spec.size, spec.size)),
            transforms.ToTensor(),
            transforms.Normalize([spec.mean], [spec.std]),
        ]
    )
    app = FastAPI()

    @app.get("/")
    async def index() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 (FastAPI's idiom, as the seed wrote it)
        data = await file.read()
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:  # the original answered every failure the same way
            raise HTTPException(400, "bad image") from None
        x = transform(image).unsqueeze(0)
        with torch.no_grad():
            logits, _ = model(x)
        probability = float(torch.sigmoid(logits[0, 0]))
        return {"label": labels[1] if probability >= 0.5 else labels[0], "probability": probability}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_server", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/model.pt"))
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="for the input size and mean/std")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_app(args.checkpoint, args.model_dir), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
