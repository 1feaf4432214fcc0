"""What every peer server shares, so that only the framework differs: the model card, the int8 ONNX
file (sha256-checked), a session with the service's thread budget, and the service's own decode,
preprocess and decision rule. Imports numpy, onnxruntime, Pillow and msgspec only (a peer's venv).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.card import read_card, read_verified
from service.inference.decision import DecisionRule
from service.inputs.imaging import load_tensor
from service.settings import available_cpus

VARIANT = "int8"


def threads() -> int:
    """ONNX Runtime intra-op threads: what the service uses by default (INFER_THREADS = usable CPUs)."""
    return available_cpus()


class Model:
    """The int8 session and the card's rule. `predict` takes encoded images, returns one
    {"label", "probability"} per image, probability being the calibrated P(not normal) as the service
    reports it."""

    def __init__(self, model_dir: Path | None = None) -> None:
        model_dir = model_dir or Path(os.environ["MODEL_DIR"])  # the service's own setting
        self.card = read_card(model_dir)
        options = ort.SessionOptions()
        # The service's budget: intra-op threads = usable CPUs, one inter-op thread. Everything else is
        # ONNX Runtime's default, as a user of these frameworks would have it (spinning threads included).
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            read_verified(model_dir, self.card, VARIANT), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.rule = DecisionRule.of(self.card)

    @staticmethod
    def card_name(model_dir: Path | None = None) -> str:
        return read_card(model_dir or Path(os.environ["MODEL_DIR"])).name

    def tensor(self, data: bytes) -> np.ndarray:
        """Encoded PNG/JPEG bytes -> (1, S, S) float32, exactly as the service decodes them."""
        return load_tensor(data, self.card.input)

    def run(self, batch: np.ndarray) -> list[dict]:
        """(N, 1, S, S) float32 -> one answer per row."""
        (logits,) = self.session.run([self.card.outputs.logits], {self.input_name: batch})
        probability = self.rule.cancer_probability(logits)
        labels = [self.card.labels[i] for i in self.rule.decide(logits)]
        return [{"label": label, "probability": float(p)} for label, p in zip(labels, probability, strict=True)]

    def predict(self, images: list[bytes]) -> list[dict]:
        return self.run(np.stack([self.tensor(data) for data in images]))


def arguments(description: str) -> argparse.Namespace:
    """A peer's command line: --host, --port (as benchmarks.servers passes them); the model folder
    comes from MODEL_DIR, as the service's does."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    return parser.parse_args()
