"""Write inferenceservice-v1beta1.json: KServe's InferenceService CRD schema, trimmed and made strict.

    python deploy/k8s/schemas/vendor_kserve.py CRD_YAML [OUT_JSON]

CRD_YAML is config/crd/full/serving.kserve.io_inferenceservices.yaml of a KServe release. Kept: the
root, spec.predictor (the custom-container predictor this project deploys) with every field but the
model-framework specs, the worker spec, init containers and affinity, and volumes of the kinds a
predictor here may use. `additionalProperties: false` is added to every object that lists its
properties (unless the CRD preserves unknown fields there), as the API server's strict field
validation (kubectl apply --validate=strict) refuses unknown fields, so that a misspelt key fails CI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

SOURCE = "https://github.com/kserve/kserve/blob/v0.20.0/config/crd/full/serving.kserve.io_inferenceservices.yaml"
COMMIT = "1fb781055dd1567164358233e1125142ca6ef1fe"
DROPPED_PREDICTOR = {
    "workerSpec", "model", "initContainers", "affinity", "huggingface", "lightgbm", "onnx", "paddle", "pmml",
    "pytorch", "sklearn", "tensorflow", "triton", "xgboost",
}  # fmt: skip
VOLUME_KINDS = {"name", "emptyDir", "configMap", "secret", "persistentVolumeClaim", "projected"}


def trimmed(crd: dict) -> dict:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    predictor = spec["properties"]["predictor"]
    for name in DROPPED_PREDICTOR:
        del predictor["properties"][name]
    volume = predictor["properties"]["volumes"]["items"]
    volume["properties"] = {k: v for k, v in volume["properties"].items() if k in VOLUME_KINDS}
    spec["properties"] = {"predictor": predictor}
    schema["properties"].pop("status")
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    schema["properties"]["apiVersion"] = {"const": "serving.kserve.io/v1beta1"}
    schema["properties"]["kind"] = {"const": "InferenceService"}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": f"From KServe v0.20.0 ({SOURCE}, commit {COMMIT}), trimmed and made strict by "
        "deploy/k8s/schemas/vendor_kserve.py; see its docstring.",
        **strict(schema),
    }


def strict(node):
    if isinstance(node, list):
        return [strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


if __name__ == "__main__":
    source = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("inferenceservice-v1beta1.json")
    target.write_text(json.dumps(trimmed(yaml.safe_load(source.read_text())), indent=1, sort_keys=True) + "\n")
    print(f"{target}: {target.stat().st_size} bytes")
