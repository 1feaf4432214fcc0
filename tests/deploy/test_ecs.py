"""deploy/ecs: each file is the input of one AWS API call (`aws ... --cli-input-json file://...`), checked
against that call's input shape in botocore's service model (unknown keys, types and missing required
fields fail); the task keeps the service's limits and health check; deploy.sh against a fake aws."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ECS = ROOT / "deploy" / "ecs"
FAKES = Path(__file__).parent / "fakes"
CALLS = {
    "task-definition.json": ("ecs", "RegisterTaskDefinition"),
    "service.json": ("ecs", "CreateService"),
    "target-group.json": ("elbv2", "CreateTargetGroup"),
    "target-group-attributes.json": ("elbv2", "ModifyTargetGroupAttributes"),
    "listener-https.json": ("elbv2", "CreateListener"),
    "listener-http.json": ("elbv2", "CreateListener"),
    "listener-https-attributes.json": ("elbv2", "ModifyListenerAttributes"),
    "scalable-target.json": ("application-autoscaling", "RegisterScalableTarget"),
    "scaling-policy.json": ("application-autoscaling", "PutScalingPolicy"),
}


def load(name: str) -> dict:
    return json.loads((ECS / name).read_text())


def problems(name: str, params: dict) -> str:
    """botocore's report of what is wrong with `params` as the input of `name`'s API call ('' if nothing)."""
    botocore = pytest.importorskip("botocore.session", reason="botocore (the dev extra)")
    from botocore.validate import ParamValidator

    service, operation = CALLS[name]
    shape = botocore.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    return report.generate_report() if report.has_errors() else ""


def test_every_file_is_checked() -> None:
    assert sorted(p.name for p in ECS.glob("*.json")) == sorted(CALLS)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_each_file_is_a_valid_api_input(name: str) -> None:
    assert problems(name, load(name)) == ""


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("task-definition.json", lambda d: d["containerDefinitions"][0].update(readOnlyRootFilesystem=True), "Unknown"),
        ("task-definition.json", lambda d: d["containerDefinitions"][0].update(memory="512"), "Invalid type"),
        ("task-definition.json", lambda d: d.pop("containerDefinitions"), "Missing required"),
        ("target-group.json", lambda d: d.update(HealthCheckPath=["/health/ready"]), "Invalid type"),
        ("scaling-policy.json", lambda d: d["TargetTrackingScalingPolicyConfiguration"].pop("TargetValue"), "Missing"),
        ("service.json", lambda d: d["loadBalancers"][0].update(containerPort="8000"), "Invalid type"),
    ],
)
def test_the_check_fails_on_a_broken_file(name: str, change, expected: str) -> None:
    broken = copy.deepcopy(load(name))
    change(broken)
    assert expected in problems(name, broken)


def container() -> dict:
    (api,) = load("task-definition.json")["containerDefinitions"]
    return api


def test_task_keeps_the_service_rules_and_limits() -> None:
    task, api = load("task-definition.json"), container()
    assert api["user"] == "10001:10001" and api["readonlyRootFilesystem"] is True
    assert api["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert [m["containerPath"] for m in api["mountPoints"]] == ["/tmp"]
    # Measured: 90-120 MB idle, about 300 MB at the peak of an overload: the same 512 MB as compose.
    assert api["memory"] == 512 and api["memoryReservation"] == 256 and int(task["memory"]) >= api["memory"]
    env = {e["name"]: e["value"] for e in api["environment"]}
    assert float(env["DRAIN_GRACE_S"]) + float(env["DRAIN_TIMEOUT_S"]) < api["stopTimeout"] <= 120
    # The same health check as the image's HEALTHCHECK (Dockerfile).
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    healthcheck = json.loads(re.search(r"^HEALTHCHECK .*? CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert api["healthCheck"]["command"] == ["CMD", *healthcheck]
    assert api["logConfiguration"]["logDriver"] == "awslogs"
    assert api["logConfiguration"]["options"]["mode"] == "non-blocking"
    # Every variable is one the service reads, and (placeholders filled) it accepts the values.
    filled = {k: v.replace("VPC_CIDR", "10.0.0.0/16") for k, v in env.items()}
    Settings.from_env(filled)
    from service.settings import ENV_VARS

    assert set(env) <= set(ENV_VARS)


def test_alb_checks_readiness_and_drains_longer_than_a_request() -> None:
    group = load("target-group.json")
    assert group["HealthCheckPath"] == "/health/ready" and group["Matcher"] == {"HttpCode": "200"}
    assert group["Port"] == container()["portMappings"][0]["containerPort"] == 8000
    attributes = {a["Key"]: a["Value"] for a in load("target-group-attributes.json")["Attributes"]}
    assert int(attributes["deregistration_delay.timeout_seconds"]) > Settings().request_timeout_s
    redirect = load("listener-http.json")["DefaultActions"][0]
    assert redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    service = load("service.json")
    assert service["deploymentConfiguration"]["minimumHealthyPercent"] == 100
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    policy = load("scaling-policy.json")["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    assert load("scalable-target.json")["MinCapacity"] >= 2


def run_deploy(tmp_path: Path, sha: str, **extra: str) -> subprocess.CompletedProcess[str]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / "calls.log").touch()
    env = {
        **os.environ,
        "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "AWS_REGION": "eu-west-1",
        "AWS_ACCOUNT_ID": "123456789012",
        "ECS_CLUSTER": "chest-cancer-net",
        "VPC_CIDR": "10.20.0.0/16",
        **extra,
    }
    return subprocess.run(["bash", str(ECS / "deploy.sh"), sha], env=env, capture_output=True, text=True, timeout=60)


def test_deploy_registers_this_commit_and_moves_the_service(tmp_path: Path) -> None:
    sha = "4" * 40
    done = run_deploy(tmp_path, sha)
    assert done.returncode == 0, done.stdout + done.stderr
    task = json.loads((tmp_path / "state" / "task-definition.json").read_text())
    text = json.dumps(task)
    assert "ACCOUNT_ID" not in text and "REGION" not in text.replace("awslogs-region", "")
    assert (
        task["containerDefinitions"][0]["image"]
        == f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/chest-cancer-net:{sha}"
    )
    assert problems("task-definition.json", task) == ""
    calls = (tmp_path / "state" / "calls.log").read_text()
    assert "ecs update-service --cluster chest-cancer-net --service chest-cancer-net --task-definition" in calls
    assert "ecs wait services-stable" in calls and f"{sha[:12]} is live" in done.stdout


def test_deploy_fails_the_job_when_ecs_rolled_back(tmp_path: Path) -> None:
    done = run_deploy(tmp_path, "5" * 40, FAKE_ECS_ROLLBACK="1")
    assert done.returncode == 1 and "ECS rolled back" in done.stdout


@pytest.mark.parametrize(("sha", "extra"), [("main", {}), ("6" * 40, {"VPC_CIDR": "the-vpc"})])
def test_deploy_refuses_bad_input(tmp_path: Path, sha: str, extra: dict) -> None:
    done = run_deploy(tmp_path, sha, **extra)
    assert done.returncode != 0 and "register-task-definition" not in (tmp_path / "state" / "calls.log").read_text()
