"""Static checks of the Dockerfile, .dockerignore, compose.yaml and the monitoring config."""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from service.observability.metrics import Metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/chest-cancer-net.json").read_text())


def instructions(keyword: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(keyword + " ")]


def test_dockerfile_runtime_stage() -> None:
    assert instructions("ARG")[0] == "BASE_IMAGE=python:3.11-slim"
    *stages, final = instructions("FROM")
    assert all(f.startswith("${BASE_IMAGE}") for f in stages)
    # The runtime is the base's Python and the libraries it loads, copied onto nothing (runtime_rootfs.py).
    assert final == "scratch" and "--from=build /rootfs /" in instructions("COPY")
    assert instructions("USER") == ["10001:10001"]
    entry = json.loads(instructions("ENTRYPOINT")[0])  # exec form: Python is PID 1 and gets SIGTERM
    assert entry[:3] == ["/opt/venv/bin/python", "-m", "service"] and entry[3:5] == ["--host", "0.0.0.0"]
    (health,) = instructions("HEALTHCHECK")
    assert "/health/ready" in health and "curl" not in health and "wget" not in health


def test_dockerignore_lets_in_exactly_what_the_dockerfile_reads() -> None:
    rules = (ROOT / ".dockerignore").read_text().split()
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert rules[rules.index("*")] == "*"  # an allow-list
    sources = set()
    for copy in instructions("COPY"):
        if "--from=" not in copy:
            sources.update(s.rstrip("/").replace("[s]", "s").replace("[e]", "e") for s in copy.split()[:-1])
    assert sources == allowed


def test_compose_api_is_hardened_and_fits_a_small_host() -> None:
    api = COMPOSE["services"]["api"]
    assert api["read_only"] is True and any(t.startswith("/tmp:") for t in api["tmpfs"])
    assert api["cap_drop"] == ["ALL"] and "no-new-privileges:true" in api["security_opt"]
    assert api["restart"] == "unless-stopped" and "profiles" not in api
    assert api["ports"] == ["${API_PORT:-8000}:8000"]
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])
    limit = int(api["mem_limit"].rstrip("m"))
    assert 256 <= limit <= 512 and api["memswap_limit"] == api["mem_limit"]
    stop = int(api["stop_grace_period"].rstrip("s"))
    assert stop > float(api["environment"]["DRAIN_TIMEOUT_S"].split("-")[-1].rstrip("}")) + 2


def test_monitoring_runs_only_under_its_profile() -> None:
    for name in ("prometheus", "grafana"):
        service = COMPOSE["services"][name]
        assert service["profiles"] == ["monitoring"]
        assert not service["image"].endswith(":latest") and ":" in service["image"]
        assert all(p.startswith("127.0.0.1:") for p in service["ports"])
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            assert not source.startswith("./") or (ROOT / source).exists(), volume


def test_tls_profile_puts_caddy_in_front_with_a_fixed_trusted_address() -> None:
    proxy, api = COMPOSE["services"]["proxy"], COMPOSE["services"]["api"]
    assert proxy["profiles"] == ["tls"] and re.fullmatch(r"caddy:2\.6\.\d+-alpine", proxy["image"])
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert proxy["ports"] == ["80:80", "443:443"] and proxy["environment"]["UPSTREAMS"] == "api:8000"
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"] and proxy["cap_add"] == ["NET_BIND_SERVICE"]
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    # The service believes X-Forwarded-For from the proxy's address alone, inside the edge network.
    address = proxy["networks"]["edge"]["ipv4_address"]
    subnet = COMPOSE["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    assert api["environment"]["FORWARDED_ALLOW_IPS"] == f"${{FORWARDED_ALLOW_IPS:-{address}}}"
    assert set(api["networks"]) == {"default", "edge"}
    # The proxy's health checks must see a draining process (ready 503) before it stops listening.
    caddyfile = (ROOT / "deploy/caddy/Caddyfile").read_text()
    interval = float(re.search(r"\{\$HEALTH_INTERVAL:(\d+(?:\.\d+)?)s\}", caddyfile).group(1))
    grace = float(re.search(r":-([\d.]+)\}", api["environment"]["DRAIN_GRACE_S"]).group(1))
    assert interval < grace
    limit = re.search(r":-(\d+)\}", proxy["environment"]["MAX_BODY_BYTES"]).group(1)
    assert int(limit) == Settings().max_body_bytes


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: ${VAR}, ${VAR:-default} (also when empty), ${VAR-default}, $$ for $."""

    def value(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        current = env.get(name)
        if op == ":-" and not current or op == "-" and current is None:
            return default
        return current or ""

    return re.sub(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}", value, text)


def test_interpolation_follows_compose() -> None:
    text = "${A:-x} ${B-y} ${C:-z} ${D-w} ${E} $$HOME"
    assert interpolate(text, {"A": "a", "B": "", "C": ""}) == "a  z w  $HOME"


def test_compose_file_passes_a_strict_compose_spec_parser() -> None:
    # The compose-spec Rust parser (dev extra) refuses unknown keys and wrong types, so a misspelt
    # option cannot pass silently; `docker compose config` below does the same where the plugin exists.
    compose_spec = pytest.importorskip("compose_spec", reason="compose-spec (the dev extra) is not installed")
    text = (ROOT / "compose.yaml").read_text()
    parsed = compose_spec.PyCompose.from_yaml(interpolate(text, {}))
    assert parsed.service_names() == ["api", "prometheus", "grafana", "proxy"]
    for broken in (text.replace("read_only: true", "read_only: maybe", 1), text.replace("cap_drop:", "cap_dorp:", 1)):
        with pytest.raises(ValueError):
            compose_spec.PyCompose.from_yaml(interpolate(broken, {}))


def test_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no docker compose plugin here (the compose-spec parser above checks the file)")
    result = subprocess.run(
        [docker, "compose", "--profile", "monitoring", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def exposed_names() -> set[str]:
    """Every sample name the service's /metrics can show, from its own registry."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    metrics = Metrics()
    metrics.watch_trust(1.0, None)  # a model with an OOD gate adds the OOD score histogram
    return {
        family.name + suffix for family in metrics.registry.collect() for suffix in suffixes.get(family.type, ("",))
    }


def expressions() -> list[str]:
    exprs = [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return exprs + [r["expr"] for g in alerts["groups"] for r in g["rules"]]


def test_dashboard_and_alerts_use_only_metrics_the_service_exposes() -> None:
    names = exposed_names() | {"up"}
    used = {m for e in expressions() for m in re.findall(r"\b((?:chestnet|process)_[a-z_]+|up)\b(?=[{\[)\s])", e)}
    assert used - names == set()
    assert {"chestnet_queue_depth", "chestnet_batch_size_bucket", "chestnet_positive_probability_bucket"} <= used
    assert {"chestnet_drift_psi", "chestnet_abstentions_total", "chestnet_ood_score_bucket"} <= used
    assert {"chestnet_shadow_total", "chestnet_shadow_probability_difference_bucket"} <= used


def test_dashboard_has_the_panels_asked_for() -> None:
    titles = " | ".join(p["title"].lower() for p in DASHBOARD["panels"])
    for needed in (
        "p50 / p95 / p99",
        "throughput",
        "errors by code",
        "queue depth",
        "batch size",
        "predictions by label",
        "p(not normal) distribution",
        "drift",
        "abstentions",
        "ood score",
        "shadow candidate",
    ):
        assert needed in titles
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in DASHBOARD["panels"]} == {uid}
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]["job_name"]
    assert all(j == job for e in expressions() for j in re.findall(r'job="([^"]+)"', e))
