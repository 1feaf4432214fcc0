#!/usr/bin/env python3
"""The fake host's service, behind the fake `curl` (every URL but /health/ready) and started by the fake
`docker compose up`: the admin and model routes of the service's contract, with state in
$FAKE_STATE/service.json.

    fake_service.py --start RELEASE_DIR REFRESH(0|1)    what `docker compose up` does
    fake_service.py CURL-ARGS... URL                      what `curl` does

Loading a model folder checks its card and the served variant's sha256, as the real service does (a
tampered file or a missing card is refused with 409, the old model keeping its place). Failure switches:
$FAKE_STATE/promote_noop (promote answers 200 but swaps nothing), $FAKE_STATE/tally.json (the shadow's
counts). Calls are recorded in $FAKE_STATE/calls.log by the fake curl.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

state = Path(os.environ["FAKE_STATE"])
SERVICE = state / "service.json"
VARIANT = "int8"
BAKED = {"name": "chest-cancer-net", "version": "baked", "variant": VARIANT, "sha256": "b" * 64}


class Rejected(Exception):
    pass


def load(folder: Path) -> dict:
    """The model reference the real service answers with, after the checks it makes."""
    try:
        card = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise Rejected(f"model card unreadable in {folder}: {exc}") from None
    entry = card["files"][VARIANT]
    try:
        digest = hashlib.sha256((folder / entry["path"]).read_bytes()).hexdigest()
    except OSError:
        raise Rejected(f"model file not found: {folder / entry['path']}") from None
    if digest != entry["sha256"]:
        raise Rejected(f"model file {folder / entry['path']} does not match its card")
    return {"name": card["name"], "version": card["version"], "variant": VARIANT, "sha256": digest}


def start(release_dir: Path, refresh: bool) -> None:
    env = dict(line.split("=", 1) for line in (release_dir / ".env").read_text().splitlines() if "=" in line)
    service = {"primary": BAKED, "shadow": None, "admin_key": "", "models": None, "down": False}
    if refresh:  # compose.refresh.yaml: MODEL_DIR and SHADOW_MODEL_DIR under the mounted models folder
        models = release_dir / "models"
        service.update(admin_key=env.get("ADMIN_API_KEY", ""), models=str(models))
        try:
            service.update(primary=load(models / "current"), shadow=load(models / "shadow"))
        except Rejected:
            service["down"] = True  # a bad model stops start-up
    SERVICE.write_text(json.dumps(service))


def summary(service: dict) -> dict:
    tally = {"compared": 0, "agree": 0, "disagree": 0, "dropped": 0, "errors": 0}
    if (state / "tally.json").exists():
        tally.update(json.loads((state / "tally.json").read_text()))
    compared = tally["compared"]
    agreement = tally["agree"] / compared if compared else None
    return {
        "active": service["shadow"] is not None,
        "candidate": service["shadow"],
        "since": "2026-01-01T00:00:00Z",
        **tally,
        "agreement": agreement,
        "agreement_interval": [max(0.0, agreement - 0.05), min(1.0, agreement + 0.05)] if compared else None,
        "labels": tally.get("labels", {}),
        "probability_difference": tally.get("probability_difference", {}),
    }


def route(service: dict, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    if (method, path) == ("GET", "/v1/model"):
        return 200, {**service["primary"], "shadow": service["shadow"]}
    if (method, path) == ("GET", "/v1/shadow"):
        return 200, summary(service)
    if not path.startswith("/admin/") or not service["admin_key"]:
        return 404, {"error": "not_found"}
    if headers.get("x-admin-key") != service["admin_key"]:
        return 401, {"error": "unauthorized"}
    models = Path(service["models"])
    before = {"primary": service["primary"], "shadow": service["shadow"]}
    try:
        if (method, path) == ("POST", "/admin/models/reload"):
            service["primary"] = load(models / "current")
        elif (method, path) == ("POST", "/admin/models/reload?target=shadow"):
            service["shadow"] = load(models / "shadow")
        elif (method, path) == ("POST", "/admin/models/promote"):
            if service["shadow"] is None:
                return 409, {"error": "no_shadow", "detail": "no candidate is loaded"}
            if not (state / "promote_noop").exists():
                service["primary"], service["shadow"] = service["shadow"], None
        elif (method, path) == ("DELETE", "/admin/models/shadow"):
            service["shadow"] = None
        elif (method, path) == ("POST", "/admin/shadow/reset"):
            pass
        else:
            return 404, {"error": "not_found"}
    except Rejected as exc:
        return 409, {"error": "model_rejected", "detail": str(exc)}
    return 200, {"primary": service["primary"], "shadow": service["shadow"], "previous": before["primary"]}


# curl's options that take a value, short name -> long name.
VALUED = {"-X": "--request", "-H": "--header", "-o": "--output", "-w": "--write-out", "-m": "--max-time"}


def curl(args: list[str]) -> int:
    options, headers, fail = {}, {}, False
    words = iter(args[:-1])
    for arg in words:
        arg = VALUED.get(arg, arg)
        if arg in VALUED.values():
            options[arg] = value = next(words)
            if arg == "--header":
                lines = Path(value[1:]).read_text().splitlines() if value.startswith("@") else [value]
                for line in lines:
                    key, _, val = line.partition(":")
                    headers[key.strip().lower()] = val.strip()
        elif arg in ("--fail", "-f"):
            fail = True  # other flags (--silent, --show-error) change nothing here
    method, output, write_out = options.get("--request", "GET"), options.get("--output"), options.get("--write-out", "")
    url = args[-1]
    if not SERVICE.exists() or json.loads(SERVICE.read_text())["down"]:
        print("curl: (7) Failed to connect to 127.0.0.1: Connection refused", file=sys.stderr)
        return 7
    service = json.loads(SERVICE.read_text())
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    code, body = route(service, method, path, headers)
    SERVICE.write_text(json.dumps(service))
    if fail and code >= 400:
        print(f"curl: (22) The requested URL returned error: {code}", file=sys.stderr)
        return 22
    text = json.dumps(body)
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)
    sys.stdout.write(write_out.replace("%{http_code}", str(code)))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--start":
        start(Path(sys.argv[2]), sys.argv[3] == "1")
        sys.exit(0)
    sys.exit(curl(sys.argv[1:]))
