"""The export stage end to end on the toy project: the three files when every gate passes, and each gate
failing, with a message naming it and its numbers, on a deliberately broken export (and then no card)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from service.card import golden_input, read_card, read_verified, sha256_bytes

pytestmark = pytest.mark.train

MODEL_FILES = {"model.onnx", "model.int8.onnx", "model.json", "ood_stats.npz"}


def run_stage(capsys) -> tuple[int, str, dict]:
    from export.stage import main

    code = main()
    out = capsys.readouterr()
    return code, out.out + out.err, json.loads(Path("reports/parity.json").read_text())


def test_export_writes_checked_models_and_card(project, capsys):
    code, output, parity = run_stage(capsys)

    assert code == 0, output
    assert {p.name for p in Path("models").iterdir()} == MODEL_FILES  # one file per model: no .data
    assert parity["passed"] and parity["failures"] == []
    card = read_card(Path("models"))
    for variant, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        data = read_verified(Path("models"), card, variant)
        assert card.files[variant].sha256 == sha256_bytes((Path("models") / name).read_bytes())
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        golden = session.run(["logits"], {"image": golden_input(card.input.size)})[0][0]
        np.testing.assert_allclose(golden, card.golden.logits[variant], atol=card.golden.atol[variant])
        # Dynamic batch: the service batches requests.
        logits, cam, features = session.run(None, {"image": np.zeros((3, 1, 64, 64), np.float32)})
        assert logits.shape == (3, 1) and cam.shape == (3, 1, 2, 2) and features.shape == (3, 1408)
    fp32 = onnx.load("models/model.onnx")
    assert max(o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert (card.input.size, card.input.mean, card.input.std) == (64, 0.2, 0.25)
    assert card.threshold == 0.5 and card.metrics["roc_auc"]["value"] == 1.0
    assert card.parity == parity
    assert card.data_manifest_sha256 == sha256_bytes(Path("data/prepared/manifest.json").read_bytes())
    assert "QuantizeLinear" in {node.op_type for node in onnx.load("models/model.int8.onnx").graph.node}
    assert set(parity["gates"]["preprocess"]["groups"]) >= {"test_split", "png_RGBA", "png_RGB", "jpeg_RGB"}
    # The trust fields travel with the model: the gate the ood stage chose, its verified statistics, drift.
    fit = json.loads(Path("artifacts/ood.json").read_text())
    assert card.ood.method == fit["method"] and card.ood.threshold == fit["threshold"]
    assert card.outputs.features == "features"
    if card.ood.statistics is not None:
        assert card.ood.statistics.sha256 == sha256_bytes(Path("artifacts/ood_stats.npz").read_bytes())
    assert set(card.drift.features) == {"grey_level", "ood_score", "probability"}
    ood = parity["gates"]["ood"]
    assert ood["passed"] and ood["images"] > 8 and ood["max_rel_score_fp32"] <= 1e-3


def test_export_registers_the_model_in_mlflow(project, capsys):
    code, output, _ = run_stage(capsys)
    assert code == 0, output

    from training.tracking import configure

    client = configure().MlflowClient()
    card = read_card(Path("models"))
    versions = client.search_model_versions(f"name='{card.name}'")
    newest = max(versions, key=lambda v: int(v.version))
    assert newest.tags["sha256.int8"] == card.files["int8"].sha256
    names = {Path(a.path).name for a in client.list_artifacts(newest.run_id, "model")}
    assert names == MODEL_FILES
    metrics = client.get_run(newest.run_id).data.metrics
    assert metrics["parity.int8.agreement"] == 1.0 and metrics["test.roc_auc.value"] == 1.0


# --- broken exports: each must fail its gate, say why, and leave no model or card behind ---------------


def assert_gate_fails(capsys, gate: str, *phrases: str) -> dict:
    code, output, parity = run_stage(capsys)
    assert code == 1
    assert "parity gates breached, no model written" in output
    for phrase in phrases:
        assert phrase in output, output
    assert not Path("models").exists()
    assert not parity["passed"] and not parity["gates"][gate]["passed"]
    assert any(line.startswith(f"{gate}:") for line in parity["failures"])
    return parity


def wrap(monkeypatch, name: str, after) -> None:
    """Make export.stage.<name> run as usual, then `after(output path)`."""
    import export.stage

    original = getattr(export.stage, name)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        after(Path(args[1]))
        return result

    monkeypatch.setattr(export.stage, name, wrapped)


def perturb_weights(path: Path) -> None:
    proto = onnx.load(str(path))
    largest = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(largest)
    largest.CopyFrom(numpy_helper.from_array(weights * np.float32(1.02), largest.name))
    onnx.save(proto, str(path))


def after_output(path: Path, output: str, op_type: str, extra: np.ndarray | None = None) -> None:
    """Insert `op_type` between the graph's `output` and whatever produced it (inside uses stay raw)."""
    proto = onnx.load(str(path))
    raw = f"{output}_raw"
    for node in proto.graph.node:
        node.output[:] = [raw if name == output else name for name in node.output]
        node.input[:] = [raw if name == output else name for name in node.input]
    inputs = [raw]
    if extra is not None:
        proto.graph.initializer.append(numpy_helper.from_array(extra, f"{output}_tamper"))
        inputs.append(f"{output}_tamper")
    proto.graph.node.append(helper.make_node(op_type, inputs, [output], name=f"tamper_{output}"))
    onnx.save(proto, str(path))


def test_perturbed_fp32_weights_fail_the_fp32_gate(project, capsys, monkeypatch):
    wrap(monkeypatch, "export_fp32", perturb_weights)
    parity = assert_gate_fails(capsys, "fp32", "fp32: max |Δlogit|", "> allowed 0.0001", "(torch vs ONNX Runtime)")
    assert parity["gates"]["fp32"]["max_abs_logit"] > 1e-4


def test_wrong_mean_in_the_card_fails_the_preprocess_gate(project, capsys, monkeypatch):
    import export.stage

    original = export.stage.draft_card

    def wrong_mean(*args):
        card = original(*args)
        return msgspec.structs.replace(card, input=msgspec.structs.replace(card.input, mean=0.3))

    monkeypatch.setattr(export.stage, "draft_card", wrong_mean)
    parity = assert_gate_fails(
        capsys, "preprocess", "differs from the training pipeline by up to 0.4 > allowed 1e-05 in test_split, png_L"
    )
    assert all(parity["gates"][g]["passed"] for g in ("fp32", "int8", "heatmap"))


def test_a_card_written_wrong_fails_the_preprocess_gate(project, capsys, monkeypatch):
    # The draft is right; only the bytes on disk are wrong. The gates must see what the service reads.
    import export.write_card

    original = export.write_card.card_bytes

    def corrupted(card):
        return original(card).replace(b'"mean": 0.2', b'"mean": 0.3', 1)

    monkeypatch.setattr(export.write_card, "card_bytes", corrupted)
    parity = assert_gate_fails(
        capsys, "preprocess", "differs from the training pipeline by up to 0.4 > allowed 1e-05 in test_split, png_L"
    )
    assert all(parity["gates"][g]["passed"] for g in ("fp32", "int8", "heatmap"))


def test_int8_model_that_disagrees_fails_the_int8_gate(project, capsys, monkeypatch):
    wrap(monkeypatch, "quantize_int8", lambda path: after_output(path, "logits", "Neg"))
    parity = assert_gate_fails(
        capsys,
        "int8",
        "int8: decision agreement with torch 0.00% < required 99.00%",
        "int8: |ΔAUC| 1.0000 > allowed 0.01",
    )
    assert parity["gates"]["fp32"]["passed"] and parity["gates"]["heatmap"]["passed"]


def test_heatmap_that_does_not_match_fails_the_heatmap_gate(project, capsys, monkeypatch):
    # A zero-mean left-right ramp on the cam output: logits (the mean) are untouched, the map is not.
    ramp = np.float32(50) * np.array([[[[-1.0, 1.0], [-1.0, 1.0]]]], np.float32)
    wrap(monkeypatch, "export_fp32", lambda path: after_output(path, "cam", "Add", ramp))
    parity = assert_gate_fails(capsys, "heatmap", "heatmap: ONNX vs torch cam correlation", "< required 0.99")
    assert parity["gates"]["fp32"]["passed"] and parity["gates"]["int8"]["passed"]


def test_missing_checkpoint_is_a_clear_error(project, capsys):
    from export.stage import main

    Path("artifacts/model.pt").unlink()
    assert main() == 1
    assert "missing input(s) artifacts/model.pt" in capsys.readouterr().err
