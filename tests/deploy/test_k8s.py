"""deploy/k8s offline: every overlay builds with `kubectl kustomize`; the core kinds pass
kubernetes-validate (strict, bundled schemas of a pinned Kubernetes); the InferenceService passes the
vendored KServe CRD schema with check-jsonschema; each check fails on a broken manifest; and the
manifests keep the service's rules (non-root, probes, drain, limits, who may connect)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMA = K8S / "schemas" / "inferenceservice-v1beta1.json"
KUBERNETES_VERSION = "1.32.0"  # the oldest minor EKS, GKE and AKS all still support
OVERLAYS = ("overlays/dev", "overlays/production", "kserve")
CORE = {"Namespace", "ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
CORE |= {"NetworkPolicy", "Ingress"}


def kustomize(folder: Path) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (CI machines have it; Debian does not package it)")
    return subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)


def build(overlay: str) -> list[dict]:
    done = kustomize(K8S / overlay)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def one(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def validate_core(doc: dict) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra)")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def check_jsonschema(doc: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (the dev extra)")
    target = tmp_path / "inferenceservice.json"
    target.write_text(json.dumps(doc))
    command = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMA), str(target)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_and_passes_its_schemas(overlay: str, tmp_path: Path) -> None:
    docs = build(overlay)
    for doc in docs:
        if doc["kind"] == "InferenceService":
            done = check_jsonschema(doc, tmp_path)
            assert done.returncode == 0, done.stdout + done.stderr
        else:
            validate_core(doc)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        one(docs, "Namespace")["metadata"]["name"]
    }


def test_the_overlays_hold_every_kind_asked_for() -> None:
    kinds = {d["kind"] for overlay in OVERLAYS for d in build(overlay)}
    assert kinds == CORE | {"InferenceService"}
    assert set(kubernetes_versions()) >= {KUBERNETES_VERSION}


def kubernetes_versions() -> list[str]:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (the dev extra)")
    return kubernetes_validate.utils.all_versions()


def test_kustomize_fails_on_a_broken_overlay(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "k8s")
    base = tmp_path / "k8s" / "base" / "kustomization.yaml"
    base.write_text(base.read_text().replace("  - pdb.yaml\n", "  - pbd.yaml\n"))
    done = kustomize(tmp_path / "k8s" / "overlays" / "production")
    assert done.returncode != 0 and "pbd.yaml" in done.stderr


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", ["spec", "template", "spec", "containers", 0, "securityContext", "readOnlyRootFilesytem"], True),
        ("Deployment", ["spec", "template", "spec", "terminationGracePeriodSeconds"], "thirty"),
        ("HorizontalPodAutoscaler", ["spec", "metrics", 0, "resource", "target", "averageUtilisation"], 70),
        ("NetworkPolicy", ["spec", "ingress", 0, "ports", 0, "protocol"], ["TCP"]),
    ],
)
def test_kubernetes_validate_fails_on_a_broken_manifest(kind: str, path: list, value: object) -> None:
    doc = copy.deepcopy(one(build("overlays/production"), kind))
    validate_core(doc)
    set_path(doc, path, value)
    with pytest.raises(Exception, match="(?i)additional properties|is not of type"):
        validate_core(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "predictor", "minReplica"], 1),  # misspelt
        (["spec", "predictor", "containerConcurrency"], "lots"),
        (["spec", "predictor", "containers", 0, "ports", 0, "containerPort"], "8000"),
        (["kind", None], None),  # no kind at all
    ],
)
def test_the_kserve_schema_fails_on_a_broken_inference_service(path: list, value: object, tmp_path: Path) -> None:
    doc = copy.deepcopy(one(build("kserve"), "InferenceService"))
    if path[-1] is None:
        del doc[path[0]]
    else:
        set_path(doc, path, value)
    done = check_jsonschema(doc, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr


def set_path(doc: dict, path: list, value: object) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def container(docs: list[dict]) -> dict:
    deployment = one(docs, "Deployment")
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    return api


def env(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def test_deployment_is_hardened_probed_and_drains_before_it_is_killed() -> None:
    docs = build("overlays/production")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    api = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    security = api["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in api["volumeMounts"]} == {"/tmp"}
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # preStop, then the service's own drain (grace, then in-flight work), all inside the grace period.
    drain = float(env(api)["DRAIN_GRACE_S"]) + float(env(api)["DRAIN_TIMEOUT_S"])
    assert api["lifecycle"]["preStop"]["sleep"]["seconds"] + drain < pod["terminationGracePeriodSeconds"]
    # Measured: 90-120 MB idle, about 300 MB at the peak of an overload (compose gives 512m).
    resources = api["resources"]
    assert resources["requests"]["memory"] == "256Mi" and resources["limits"]["memory"] == "512Mi"
    assert one(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in one(docs, "Deployment")["spec"]  # the HPA owns it
    assert env(api)["FORWARDED_ALLOW_IPS"]  # the ingress controller's address reaches the access log
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == api["ports"][0]["containerPort"] == 8000


def test_network_policy_admits_only_the_ingress_and_prometheus() -> None:
    docs = build("overlays/production")
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    (rule,) = policy["ingress"]
    names = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]]
    assert names == ["ingress-nginx", "prometheus"] and rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []
    ingress = one(docs, "Ingress")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert "/v1" in paths and "/v2" in paths and not any(p.startswith("/metrics") for p in paths)
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "8m"


def test_autoscaling_and_disruption_budget() -> None:
    docs = build("overlays/production")
    hpa, pdb = one(docs, "HorizontalPodAutoscaler")["spec"], one(docs, "PodDisruptionBudget")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chest-cancer-net"}
    assert hpa["minReplicas"] >= 2 and pdb["maxUnavailable"] == 1  # a drain never takes the last pod
    assert one(build("overlays/dev"), "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 1


def test_inference_service_runs_the_same_container_and_scales_on_concurrency() -> None:
    docs = build("kserve")
    isvc = one(docs, "InferenceService")
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    assert annotations["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    assert annotations["autoscaling.knative.dev/metric"] == "concurrency"
    predictor = isvc["spec"]["predictor"]
    target = int(annotations["autoscaling.knative.dev/target"])
    assert 1 <= target <= predictor["containerConcurrency"] <= 64  # under the service's MAX_CONNECTIONS
    (kserve,) = predictor["containers"]
    api = container(build("overlays/production"))
    assert kserve["image"] == api["image"]
    for key in ("resources", "securityContext", "volumeMounts"):
        assert kserve[key] == api[key], key
    for probe in ("readinessProbe", "livenessProbe"):
        assert kserve[probe]["httpGet"]["path"] == api[probe]["httpGet"]["path"]
    assert env(kserve)["DRAIN_GRACE_S"] == env(api)["DRAIN_GRACE_S"]


def test_vendored_kserve_schema_says_where_it_came_from() -> None:
    schema = json.loads(SCHEMA.read_text())
    assert "KServe v0.20.0" in schema["$comment"] and "vendor_kserve.py" in schema["$comment"]
    predictor = schema["properties"]["spec"]["properties"]["predictor"]
    assert predictor["additionalProperties"] is False and "containers" in predictor["properties"]
