"""The AWS JSON (deploy/aws IAM policies, deploy/cloudwatch) and the CloudWatch wiring: every IAM action
exists (botocore's service models), wildcards only where AWS allows nothing narrower, the agent
configuration passes the agent's own JSON schema (vendored) and selects metrics the service exposes,
and the awslogs override replaces compose's logging with only awslogs options."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_image_files import exposed_names

ROOT = Path(__file__).resolve().parents[2]
AWS = ROOT / "deploy" / "aws"
CLOUDWATCH = ROOT / "deploy" / "cloudwatch"
SERVICES = {"ecr": "ecr", "logs": "logs", "ssm": "ssm", "ecs": "ecs", "s3": "s3", "sts": "sts", "iam": "iam"}
PERMISSION_ONLY = {"iam:PassRole", "s3:ListBucket"}  # IAM actions that are not API operations
UNSCOPED = {"ecr:GetAuthorizationToken", "ecs:RegisterTaskDefinition", "ssm:GetCommandInvocation"}
UNSCOPED |= {"ssm:ListCommandInvocations"}  # AWS offers no resource for these
AWSLOGS_OPTIONS = {
    "awslogs-region", "awslogs-endpoint", "awslogs-group", "awslogs-stream", "awslogs-create-group",
    "awslogs-datetime-format", "awslogs-multiline-pattern", "awslogs-credentials-endpoint", "awslogs-format",
    "awslogs-force-flush-interval-seconds", "awslogs-max-buffered-events", "mode", "max-buffer-size", "tag",
}  # fmt: skip


def policies() -> dict[str, dict]:
    docs = {p.name: json.loads(p.read_text()) for p in sorted(AWS.glob("*.json"))}
    return {name: doc for name, doc in docs.items() if "Statement" in doc}


def operations(prefix: str) -> set[str]:
    session = pytest.importorskip("botocore.session", reason="botocore (the dev extra)").get_session()
    return set(session.get_service_model(SERVICES[prefix]).operation_names)


def lint(policy: dict) -> list[str]:
    """What is wrong with an IAM policy document ([] when nothing)."""
    found = [] if policy.get("Version") == "2012-10-17" else ["Version is not 2012-10-17"]
    for i, statement in enumerate(policy["Statement"]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement.get("Resource", [])
        resources = resources if isinstance(resources, list) else [resources]
        if statement.get("Effect") not in ("Allow", "Deny"):
            found.append(f"statement {i}: Effect {statement.get('Effect')!r}")
        for action in actions:
            prefix, _, name = action.partition(":")
            if "*" in action:
                found.append(f"statement {i}: wildcard action {action}")
            elif prefix not in SERVICES:
                found.append(f"statement {i}: unknown service {prefix}")
            elif action not in PERMISSION_ONLY and name not in operations(prefix):
                found.append(f"statement {i}: {action} is not an action of {prefix}")
        if "*" in resources and not set(actions) <= UNSCOPED:
            found.append(f"statement {i}: Resource * for {sorted(set(actions) - UNSCOPED)}")
        for resource in resources:
            if resource != "*" and not re.fullmatch(r"arn:aws:[a-z0-9-]+:(REGION)?:(ACCOUNT_ID)?:\S+", resource):
                found.append(f"statement {i}: {resource} is not an ARN of this account")
        if ("Principal" in statement) != (statement["Action"] in ("sts:AssumeRole", "sts:AssumeRoleWithWebIdentity")):
            found.append(f"statement {i}: a Principal belongs in trust policies only")
    return found


@pytest.mark.parametrize("name", sorted(policies()))
def test_iam_policies_pass_the_lint(name: str) -> None:
    assert lint(policies()[name]) == []


def test_every_aws_json_file_parses() -> None:
    files = sorted(AWS.glob("*.json")) + sorted(CLOUDWATCH.glob("*.json"))
    assert len(files) >= 10
    for path in files:
        json.loads(path.read_text())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.update(Action=["logs:PutLogEvent"]), "is not an action of logs"),
        (lambda s: s.update(Resource="*"), "Resource * for"),
        (lambda s: s.update(Action="logs:*"), "wildcard action"),
        (lambda s: s.update(Resource="arn:aws:logs:eu-west-1:999999999999:log-group:x"), "not an ARN of this account"),
    ],
)
def test_the_lint_fails_on_a_broken_policy(change: Callable[[dict], None], expected: str) -> None:
    policy = copy.deepcopy(policies()["instance-cloudwatch-policy.json"])
    change(policy["Statement"][0])
    assert any(expected in problem for problem in lint(policy))


def test_the_roles_may_write_exactly_the_log_groups_in_use() -> None:
    agent = json.loads((CLOUDWATCH / "amazon-cloudwatch-agent.json").read_text())
    override = yaml.safe_load((CLOUDWATCH / "compose.awslogs.yaml").read_text())
    task = json.loads((ROOT / "deploy" / "ecs" / "task-definition.json").read_text())
    metrics_group = agent["logs"]["metrics_collected"]["prometheus"]["log_group_name"]
    api_group = re.search(r":-([^}]+)\}", override["services"]["api"]["logging"]["options"]["awslogs-group"]).group(1)
    ecs_group = task["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"]

    def groups(name: str) -> set[str]:
        statements = policies()[name]["Statement"]
        arns = [r for s in statements if s["Action"][0].startswith("logs:") for r in s["Resource"]]
        return {re.fullmatch(r".*:log-group:(.+):\*", arn).group(1) for arn in arns}

    assert groups("instance-cloudwatch-policy.json") == {api_group, metrics_group}
    assert {ecs_group} == {api_group}  # the same group, whichever engine writes it
    assert re.findall(r"log-group:(.+?):\*", (AWS / "ecs-task-execution-policy.json").read_text()) == [ecs_group]


def check_agent(config: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (the dev extra)")
    target = tmp_path / "agent.json"
    target.write_text(json.dumps(config))
    schema = CLOUDWATCH / "agent-schema.json"
    command = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(target)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_agent_configuration_passes_the_agent_schema_and_a_broken_one_fails(tmp_path: Path) -> None:
    config = json.loads((CLOUDWATCH / "amazon-cloudwatch-agent.json").read_text())
    good = check_agent(config, tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    prometheus = config["logs"]["metrics_collected"]["prometheus"]
    prometheus["log_group_nmae"] = prometheus.pop("log_group_name")
    assert check_agent(config, tmp_path).returncode == 1
    assert "v1.300071.0" in json.loads((CLOUDWATCH / "agent-schema.json").read_text())["$comment"]


def test_agent_sends_metrics_the_service_exposes_from_the_job_it_scrapes() -> None:
    config = json.loads((CLOUDWATCH / "amazon-cloudwatch-agent.json").read_text())
    emf = config["logs"]["metrics_collected"]["prometheus"]["emf_processor"]
    names = exposed_names()
    scrape = yaml.safe_load((CLOUDWATCH / "prometheus.yaml").read_text())
    (job,) = scrape["scrape_configs"]
    for declaration in emf["metric_declaration"]:
        assert re.fullmatch(declaration["label_matcher"], job["job_name"])
        for selector in declaration["metric_selectors"]:
            assert any(re.fullmatch(selector, n) for n in names), selector
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]


def test_bootstrap_writes_the_same_scrape_file() -> None:
    bootstrap = (ROOT / "deploy" / "ec2" / "bootstrap.sh").read_text()
    written = re.search(r"prometheus\.yaml <<'SCRAPE'\n(.*?)^SCRAPE$", bootstrap, re.DOTALL | re.MULTILINE).group(1)
    assert written == (CLOUDWATCH / "prometheus.yaml").read_text()
    assert "CLOUDWATCH=${CLOUDWATCH:-off}" in bootstrap  # off unless asked for
    assert "ssm:AmazonCloudWatch-chest-cancer-net" in bootstrap
    assert "parameter/AmazonCloudWatch-chest-cancer-net" in (AWS / "instance-cloudwatch-policy.json").read_text()


def test_scrape_file_passes_promtool(tool: Callable[[str], str]) -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "config", str(CLOUDWATCH / "prometheus.yaml")], capture_output=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_awslogs_override_replaces_the_json_file_logging() -> None:
    base = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["api"]["logging"]
    override = yaml.safe_load((CLOUDWATCH / "compose.awslogs.yaml").read_text())
    assert set(override["services"]) == {"api"}
    logging = override["services"]["api"]["logging"]
    # Compose merges logging options only for the same driver; a different one replaces the block.
    assert base["driver"] == "json-file" and logging["driver"] == "awslogs"
    assert set(logging["options"]) <= AWSLOGS_OPTIONS
    assert logging["options"]["mode"] == "non-blocking" and logging["options"]["awslogs-create-group"] == "false"
    compose_spec = pytest.importorskip("compose_spec", reason="compose-spec (the dev extra)")
    text = (CLOUDWATCH / "compose.awslogs.yaml").read_text().replace("${AWS_REGION:?set AWS_REGION}", "eu-west-1")
    assert compose_spec.PyCompose.from_yaml(text).service_names() == ["api"]
