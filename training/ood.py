"""DVC stage `ood`: when not to answer. Fits each OOD method on the training split, sets its threshold on
validation, scores the test split and the OOD sets (training.ood_sets), keeps the best method, and
writes the drift reference distributions (grey levels of the training split, model outputs of the
validation split: see drift_reference).

Writes artifacts/ood_stats.npz (feature statistics), artifacts/ood.json (method, threshold, drift
references: export copies them into the card), reports/ood.json (every method on every set, a DVC
metric) and reports/ood.png.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgspec
import numpy as np
import torch
from PIL import Image

from service.card import DriftReference, InputSpec
from service.inference.decision import DecisionRule
from service.inputs.imaging import load_tensor
from service.trust import drift
from service.trust.ood import METHODS, OodScorer
from training import atomic, plots
from training.artifacts import METRICS, MODEL, OOD_FIT, OOD_PNG, OOD_REPORT, OOD_STATS, PREPARED_DIR
from training.data import input_spec, load_split
from training.fit import task_rule
from training.ingest import INGEST_LIMITS
from training.model import ChestNet, WithFeatures, load_checkpoint
from training.ood_fit import choose, fit_stats, judge
from training.ood_sets import OodSet, build_sets, real_domain_files, synthetic_domain_files
from training.params import Params, load_params
from training.tracking import stage_run

REAL_DATA = Path("../shared/data/chest-ct-kaggle/Data")  # where the project keeps the real Kaggle slices
BATCH = 64


def served_rule(meta: dict, metrics: dict) -> DecisionRule:
    """The decision rule the service will use: calibrated, with evaluate's threshold."""
    rule = task_rule(meta)
    return dataclasses.replace(
        rule, threshold=metrics["threshold"], temperature=metrics.get("calibration", {}).get("temperature", 1.0)
    )


def logits_and_features(model: ChestNet, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    net = WithFeatures(model).eval()
    with torch.inference_mode():
        parts = [net(torch.from_numpy(x[i : i + BATCH])) for i in range(0, len(x), BATCH)]
    return torch.cat([p[0] for p in parts]).numpy(), torch.cat([p[2] for p in parts]).numpy()


def other_domain(params: Params) -> list[bytes]:
    """The other domain's files: real slices for a synthetic model, phantoms for a real one."""
    choice = params.ood.other_domain
    if choice == "none":
        return []
    if choice != "auto":
        return real_domain_files(Path(choice))
    if params.data.source == "synthetic":
        return real_domain_files(REAL_DATA)
    return synthetic_domain_files(params.ood.images_per_set, params.data.synthetic.seed + 1000)


def ood_sets(params: Params, prepared: Path = PREPARED_DIR) -> list[OodSet]:
    """The stage's OOD sets, rebuilt identically wherever they are needed (this stage, export's gate)."""
    _, _, rows = load_split("test", input_spec(params.preprocess), prepared)
    greys = []
    for row in rows:
        with Image.open(prepared / row.file) as image:
            greys.append(image.convert("L"))
    return build_sets(greys, other_domain(params), params.ood.seed, params.ood.images_per_set)


def set_tensors(files: list[bytes], spec: InputSpec) -> np.ndarray:
    """Encoded files through the service's decode and preprocessing (as uploads), (N, 1, S, S)."""
    return np.stack([load_tensor(data, spec, INGEST_LIMITS) for data in files])


def drift_reference(x_train: np.ndarray, spec: InputSpec, scores: np.ndarray, probability: np.ndarray, bins: int):
    """The input's grey levels from the training split; the model's outputs (OOD score, P(not normal))
    from held-out images (`scores`, `probability`: the validation split's). On its own training images
    the model is surer and closer than on any new one: measured on the real data, the unshifted test
    split had PSI 0.53 (OOD score) and 0.44 (probability) against training-split references, a false
    alarm on every day's traffic. About ten images per bin keep the held-out reference steady."""
    cuts = drift.grey_cuts(bins)
    grey = np.stack([drift.grey_shares(x, spec, cuts) for x in x_train])
    scalar_bins = max(2, min(bins, len(scores) // 10))
    return DriftReference(
        source="grey levels: training split; OOD score and probability: validation split",
        features={
            drift.GREY: drift.reference_feature(grey, cuts),
            drift.OOD_SCORE: drift.scalar_reference(scores, scalar_bins),
            drift.PROBABILITY: drift.scalar_reference(probability, scalar_bins),
        },
    )


def drift_psi(reference: DriftReference, x: np.ndarray, spec: InputSpec, scores, probability) -> dict[str, float]:
    """The PSI the service would report after seeing these images (its own DriftWindow)."""
    window = drift.DriftWindow(reference, max_count=len(x), max_age_s=float("inf"))
    cuts = window.cuts(drift.GREY)
    for tensor, score, p in zip(x, scores, probability, strict=True):
        window.observe(drift.grey_shares(tensor, spec, cuts), float(score), float(p))
    return {k: round(v, 4) for k, v in window.psi().items()}


def brightened(x: np.ndarray, spec: InputSpec, amount: float = 0.2) -> np.ndarray:
    """The images `amount` brighter on the 0..1 grey scale (a window or exposure shift), clipped at white."""
    return np.minimum(x + np.float32(amount / spec.std), np.float32((1.0 - spec.mean) / spec.std))


def drift_check(model, reference, spec, scorer, rule, x_val, x_test) -> dict[str, dict[str, float]]:
    """PSI against the reference of held-out splits (should stay low) and of a shifted set (should not)."""
    out = {}
    for name, x in (("val", x_val), ("test", x_test), ("test_brightened", brightened(x_test, spec))):
        logits, features = logits_and_features(model, x)
        out[name] = drift_psi(reference, x, spec, scorer(logits, features), rule.cancer_probability(logits))
    return out


def run(params: Params) -> dict:
    spec = input_spec(params.preprocess)
    model, meta = load_checkpoint(MODEL)
    rule = served_rule(meta, json.loads(METRICS.read_text()))
    splits = {name: load_split(name, spec)[:2] for name in ("train", "val", "test")}
    outputs = {name: logits_and_features(model, x) for name, (x, _) in splits.items()}
    sets = ood_sets(params)
    set_outputs = {s.name: (s.kind, logits_and_features(model, set_tensors(s.files, spec))) for s in sets}
    judged, scorers, stats = {}, {}, {}
    for method in METHODS:
        stats[method] = fit_stats(method, outputs["train"][1], splits["train"][1], outputs["val"][1])
        scorers[method] = scorer = OodScorer(method, rule, stats[method])
        scored = {name: scorer(*outputs[name]) for name in outputs}
        in_sets = {name: (kind, scorer(*out)) for name, (kind, out) in set_outputs.items()}
        judged[method] = judge(scored["val"], scored["test"], in_sets, params.ood.max_false_abstain)
        judged[method]["scores"] = {k: v.tolist() for k, v in scored.items()} | {
            k: v[1].tolist() for k, v in in_sets.items()
        }
    method = choose(judged, params.ood.method)
    reference = drift_reference(
        splits["train"][0],
        spec,
        scorers[method](*outputs["val"]),
        rule.cancer_probability(outputs["val"][0]),
        params.ood.drift_bins,
    )
    checked = drift_check(model, reference, spec, scorers[method], rule, splits["val"][0], splits["test"][0])
    atomic.write_bytes(OOD_STATS, stats[method].to_bytes() if stats[method] else b"")
    kinds = {s.name: s.kind for s in sets}
    return {"method": method, "judged": judged, "reference": reference, "kinds": kinds, "drift_check": checked}


def main() -> None:
    params = load_params()
    result = run(params)
    method, judged = result["method"], result["judged"]
    chosen = judged[method]
    report = {
        "method": method,
        "threshold": chosen["threshold"],
        "max_false_abstain": params.ood.max_false_abstain,
        "methods": {m: {k: v for k, v in j.items() if k != "scores"} for m, j in judged.items()},
        "drift_psi": result["drift_check"],  # against the card's reference; the test split is the honest check
    }
    atomic.write_json(OOD_REPORT, report)
    atomic.write_json(
        OOD_FIT,
        {
            "method": method,
            "threshold": chosen["threshold"],
            "max_false_abstain": params.ood.max_false_abstain,
            "evaluation": report["methods"][method],
            "drift": msgspec.to_builtins(result["reference"]),
        },
    )
    plots.ood_scores(chosen["scores"], result["kinds"], chosen["threshold"], method, OOD_PNG)
    with stage_run("ood", {"ood": params.raw["ood"]}) as mlflow:
        for m, j in judged.items():
            mlflow.log_metrics({f"{m}.test_flagged": j["test_flagged"]})
            mlflow.log_metrics({f"{m}.{kind}.auroc_min": v["auroc_min"] for kind, v in j["by_kind"].items()})
        mlflow.log_artifact(str(OOD_REPORT))
        mlflow.log_artifact(str(OOD_PNG))
    kinds = ", ".join(
        f"{k} AUROC >= {v['auroc_min']:.3f} flagged {v['flagged']:.0%}" for k, v in chosen["by_kind"].items()
    )
    print(f"ood: {method}, threshold {chosen['threshold']:.4g}; test flagged {chosen['test_flagged']:.1%}; {kinds}")


if __name__ == "__main__":
    main()
