"""The seed-style baseline: how the original project served its model, rebuilt to be measured.

What it keeps from the original: torch in the serving process, one request handler that does all
the work on its own thread (Flask's threaded development server; here the stdlib's
ThreadingHTTPServer with the same listen backlog and HTTP/1.1 keep-alive), PIL -> torchvision
transforms -> eager `model(x)` inside that handler, and no batching, admission control or limits.
What it does not keep, to be fair to it: the original reloaded the model and wrote each upload to a
fixed file name on every request; here the model is loaded once, and the body never touches disk.

It serves the same trained weights (artifacts/model.pt) with the card's size and normalisation
(a plain resize, as the original did, rather than the service's letterbox).

`python -m benchmarks.seed_server --checkpoint artifacts/model.pt --model-dir models --port 8001`
POST /predict (raw image body) -> {"label", "probability"}; GET / -> 200 once the model is loaded.
"""

from __future__ import annotations

import argparse
import io
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from service.card import read_card
from training.model import load_checkpoint


class SeedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # werkzeug's threaded server keeps connections alive too
    # Headers and body leave in two writes; with Nagle on, the client's delayed ACK would add ~40 ms
    # to every answer, a socket artefact rather than the cost of the approach being measured.
    disable_nagle_algorithm = True
    model: torch.nn.Module
    transform: transforms.Compose
    labels: list[str]

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok"})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._reply(404, {"error": "not found"})
            return
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            image = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:  # the original answered every failure the same way
            self._reply(400, {"error": "bad image"})
            return
        x = self.transform(image).unsqueeze(0)
        with torch.no_grad():
            logits, _ = self.model(x)
        probability = float(torch.sigmoid(logits[0, 0]))
        label = self.labels[1] if probability >= 0.5 else self.labels[0]
        self._reply(200, {"label": label, "probability": probability})

    def _reply(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's name)
        pass  # the service logs one line per request too, but to a file; keep the terminal quiet


class SeedServer(ThreadingHTTPServer):
    request_queue_size = 128  # werkzeug's listen backlog
    daemon_threads = True


def make_handler(checkpoint: Path, model_dir: Path) -> type[SeedHandler]:
    model, meta = load_checkpoint(checkpoint)
    if meta["task"] != "binary":
        raise SystemExit("seed_server: the baseline serves binary models only")
    spec = read_card(model_dir).input
    transform = transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=1),
            transforms.Resize((spec.size, spec.size)),
            transforms.ToTensor(),
            transforms.Normalize([spec.mean], [spec.std]),
        ]
    )
    return type("Handler", (SeedHandler,), {"model": model, "transform": transform, "labels": meta["labels"]})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seed_server", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/model.pt"))
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="for the input size and mean/std")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    server = SeedServer((args.host, args.port), make_handler(args.checkpoint, args.model_dir))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
