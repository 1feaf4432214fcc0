"""The ONNX Runtime session: built once from verified bytes, self-tested, then run on batches."""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.card import CardError, ModelCard, golden_input, read_card, read_verified, sha256_bytes
from service.trust.gate import load_statistics
from service.trust.ood import FeatureStats


class SelfTestFailed(CardError):
    """The loaded model does not reproduce the golden output its card records."""


class Engine:
    """One model variant in one ONNX Runtime session. `run` is thread-safe (ORT sessions are)."""

    def __init__(
        self, card: ModelCard, variant: str, model_bytes: bytes, threads: int, ood_stats: FeatureStats | None = None
    ) -> None:
        self.card = card
        self.variant = variant
        self.ood_stats = ood_stats  # the card's verified OOD statistics, read with the model
        self.sha256 = sha256_bytes(model_bytes)
        # ORT >= 1.2x records telemetry under ~/.cache by default: nothing of a clinic's should leave,
        # and a read-only root filesystem must not produce warnings.
        ort.disable_telemetry_events()
        try:
            self.session = ort.InferenceSession(
                model_bytes, _session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CardError(f"ONNX Runtime cannot load the {variant} model: {first_line}") from None
        self.output_names = [card.outputs.logits, card.outputs.cam]
        if card.outputs.features is not None:
            self.output_names.append(card.outputs.features)
        self.input_name = self._check_io()

    @classmethod
    def open(cls, model_dir: Path, variant: str, threads: int) -> Engine:
        """Read the card, verify the sha256 of the model file (and of the OOD statistics), build the
        session and run the golden self-test.

        Raises CardError (or its subclass SelfTestFailed) with a one-line message.
        """
        card = read_card(model_dir)
        model_bytes, stats = read_verified(model_dir, card, variant), load_statistics(model_dir, card)
        engine = cls(card, variant, model_bytes, threads, stats)
        engine.self_test()
        release_free_heap()
        return engine

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(N, 1, S, S) float32 -> logits (N, K), cam (N, K, h, w), features (N, F) or None."""
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return outputs[0], outputs[1], outputs[2] if len(outputs) > 2 else None

    def self_test(self) -> float:
        """Run the card's golden input; returns the largest logit error, raises SelfTestFailed."""
        golden = self.card.golden
        if self.variant not in golden.logits or self.variant not in golden.atol:
            raise CardError(f"model card has no golden output for the {self.variant!r} variant")
        expected = np.asarray(golden.logits[self.variant], dtype=np.float32)
        try:
            logits, cam, _ = self.run(golden_input(self.card.input.size))
        except Exception as exc:  # an ORT failure here means the graph does not fit the card
            raise SelfTestFailed(f"the {self.variant} model failed to run on the golden input: {exc}") from None
        k = self.card.logits_per_image
        if logits.shape != (1, k) or cam.ndim != 4 or cam.shape[:2] != (1, k):
            raise SelfTestFailed(
                f"the {self.variant} model's outputs have shapes {logits.shape} and {cam.shape}; "
                f"the card implies (1, {k}) and (1, {k}, h, w)"
            )
        error = float(np.max(np.abs(logits[0] - expected.reshape(-1)))) if expected.size == k else np.inf
        if not error <= golden.atol[self.variant]:
            raise SelfTestFailed(
                f"the {self.variant} model's golden self-test failed: logit error {error:.3g} "
                f"> tolerance {golden.atol[self.variant]:.3g}"
            )
        return error

    def _check_io(self) -> str:
        inputs = self.session.get_inputs()
        size = self.card.input.size
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            raise CardError("the model must have exactly one float32 input")
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 1 or any(isinstance(s, int) and s != size for s in shape[2:]):
            raise CardError(f"the model's input shape {shape} does not fit the card's (N, 1, {size}, {size})")
        names = {o.name for o in self.session.get_outputs()}
        missing = set(self.output_names) - names
        if missing:
            raise CardError(f"the model has no output named {', '.join(sorted(missing))} (the card's names)")
        return inputs[0].name


def release_free_heap() -> None:
    """Return freed heap pages to the OS. Loading leaves the model's file bytes and protobuf copies
    freed but kept by glibc: trimming takes about 90 MB off the RSS of a ResNet-18 fp32 session."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Spinning idle threads would burn a burstable instance's CPU credits and starve the decoders.
    # Measured side by side in the service (2 rounds, 512x512 PNG): spinning takes 0.6 ms off inference
    # at c=1 but costs 20.1 against 11.6 ms of CPU per request there, and c=16 falls from 178 to 156
    # req/s; spinning only within a run (session.force_spinning_stop) bought nothing (3.63 vs 3.58 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options
