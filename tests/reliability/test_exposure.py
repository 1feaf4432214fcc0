"""Secrets and exposure: with API_KEY set every prediction route (every POST in the schema) refuses
without the key and accepts with it; health, metrics, the model card, the page and the docs stay
open (as documented); the key shows up nowhere; no secret is tracked in git or sent to the image."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tarfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import httpx
import pytest

from tests.reliability.corpus import png
from tests.reliability.rel_kit import REPO, leaks_in

KEY = "reliability-key-0123456789"
OPEN_ROUTES = (
    "/health/live",
    "/health/ready",
    "/v2/health/live",
    "/v2/health/ready",
    "/metrics",
    "/v1/model",
    "/v2",
    "/v2/models/chest-cancer-net",
    "/",
    "/docs",
    "/schema/openapi.json",
)
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}"),
    "assigned secret": re.compile(
        r"(?i)\b(api_key|secret|password|token)['\"]?\s*[:=]\s*['\"]([A-Za-z0-9/+_.-]{16,})['\"]"
    ),
}
# Made-up values in tests and docs: a run of one character, a counting sequence, or a word saying so.
PLACEHOLDER = re.compile(r"(?i)^((.)\2+|0123456789abcdef.*|.*(test|example|fake|dummy|placeholder|changeme|fuzz).*)$")
SECRET_FILES = ("*.pem", "*.key", "id_rsa*", ".env", "*.env", "*.p12", "credentials*", ".netrc")


def _body_for(path: str) -> dict:
    image = png()
    if path.endswith("/infer"):
        tensor = {"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]}
        return {"json": {"inputs": [tensor]}}
    field = "files" if path.endswith("/batch") else "file"
    return {"files": {field: ("scan.png", image, "image/png")}}


def test_api_key_guards_every_prediction_route(serve, model_dir: Path) -> None:
    proc = serve(model_dir, API_KEY=KEY)
    spec = httpx.get(proc.url + "/schema/openapi.json").json()
    posts = [p for p, ops in spec["paths"].items() if "post" in ops]
    assert {"/v1/predict", "/v1/predict/batch", "/v1/explain", "/v2/models/{model_name}/infer"} <= set(posts)
    for template in posts:
        path = template.replace("{model_name}", "chest-cancer-net").replace("{model_version}", "0.0.0-test")
        for headers in ({}, {"X-API-Key": KEY[:-1] + "x"}, {"Authorization": "Bearer nope"}, {"X-API-Key": ""}):
            r = httpx.post(proc.url + path, headers=headers, **_body_for(path))
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["error"] == "unauthorized" and KEY not in r.text and not leaks_in(r.text)
        for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
            r = httpx.post(proc.url + path, headers=headers, **_body_for(path))
            assert r.status_code == 200, (path, r.text)
    for path in OPEN_ROUTES:
        r = httpx.get(proc.url + path)
        assert r.status_code == 200, path
        assert KEY not in r.text, path
    assert KEY not in proc.output()


def _tracked_files() -> list[str]:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [name for name in done.stdout.decode().split("\0") if name]


def _scan(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        if any(fnmatch(path.name, pattern) for pattern in SECRET_FILES):
            found.append(f"{path}: a secret-shaped file name")
        try:
            text = path.read_text(errors="ignore")
        except (OSError, UnicodeDecodeError):
            continue
        for kind, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                value = match.group(match.lastindex or 0)
                if not PLACEHOLDER.match(value):
                    found.append(f"{path}: {kind}")
    return found


def test_no_secret_is_tracked_in_git() -> None:
    files = [REPO / name for name in _tracked_files()]
    files = [f for f in files if f.is_file() and f.stat().st_size < 2_000_000]
    assert len(files) > 50
    assert _scan(files) == []


def test_the_image_gets_no_secret() -> None:
    """The Dockerfile bakes in no key, and its build context (.dockerignore allow-list) carries none."""
    dockerfile, ignore = REPO / "Dockerfile", REPO / ".dockerignore"
    if not dockerfile.is_file():
        pytest.skip("no Dockerfile in this tree")
    text = dockerfile.read_text()
    assert not re.search(r"(?im)^\s*(ENV|ARG)\b.*\b(API_KEY|SECRET|PASSWORD|TOKEN)\b", text), "a secret in the image"
    assert ignore.is_file(), "no .dockerignore: the whole tree (.git, data, mlflow.db) would be the build context"
    rules = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "the .dockerignore should be an allow-list"
    allowed = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    context = [p for rule in allowed for p in (REPO.glob(rule + "/**/*") if (REPO / rule).is_dir() else [REPO / rule])]
    assert not any(fnmatch(rule, pattern) for rule in allowed for pattern in (".env*", ".git*", "*.db", "data*"))
    assert _scan([p for p in context if p.is_file() and p.suffix not in (".onnx", ".whl")]) == []


IMAGE = "localhost/chest-cancer-net:smoke"  # built by tests/deploy/test_image_smoke.py
FORBIDDEN_IN_IMAGE = (".git", ".env", "mlflow.db", "optuna.db", ".netrc", "id_rsa", "params.yaml", "dvc.yaml")


@pytest.mark.slow
def test_the_built_image_carries_no_secret(tmp_path: Path) -> None:
    """The image itself: no secret-like variable or build argument, no repo, data or credential file,
    no secret in /app. Runs where tests/deploy has built the smoke image with podman."""
    if not shutil.which("podman"):
        pytest.skip("no podman here")
    if subprocess.run(["podman", "image", "exists", IMAGE]).returncode != 0:
        pytest.skip(f"no {IMAGE} (tests/deploy/test_image_smoke.py builds it)")
    config = json.loads(subprocess.run(["podman", "image", "inspect", IMAGE], capture_output=True, check=True).stdout)
    env = config[0]["Config"].get("Env") or []
    assert not [e for e in env if re.match(r"(?i)[A-Z_]*(KEY|SECRET|TOKEN|PASSWORD)[A-Z_]*=", e)], env
    history = subprocess.run(
        ["podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert not re.search(r"(?i)(API_KEY|SECRET|TOKEN|PASSWORD)=\S", history)
    container = subprocess.run(["podman", "create", IMAGE], capture_output=True, text=True, check=True).stdout.strip()
    archive = tmp_path / "image.tar"
    try:
        subprocess.run(["podman", "export", "-o", str(archive), container], check=True, timeout=300)
    finally:
        subprocess.run(["podman", "rm", "-f", container], capture_output=True)
    found, scanned = [], []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            key_like = name.suffix in (".pem", ".key", ".crt")  # public CA certificates are fine: read them
            if any(part in FORBIDDEN_IN_IMAGE for part in name.parts) or (
                not key_like and any(fnmatch(name.name, pattern) for pattern in SECRET_FILES)
            ):
                found.append(member.name)
            in_app = name.parts[:1] == ("app",) and name.suffix not in (".onnx", ".pyc")
            if member.isfile() and (in_app or key_like):
                target = tmp_path / "fs" / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                scanned.append(target)
    assert found == [], found
    assert scanned and [f for f in _scan(scanned) if "file name" not in f] == []
