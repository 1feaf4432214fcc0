"""The peer servers' plumbing, without their frameworks: what each venv installs, the request each
peer is sent, and that a peer which is missing or fails is reported with its reason, never dropped
(the servers themselves run in the smoke benchmark, test_smoke.py)."""

from __future__ import annotations

import base64
import json
import sys

import pytest

from benchmarks import servers
from benchmarks.load import merge
from benchmarks.peers import PEERS, install
from benchmarks.peers.calls import BOUNDARY, peer_call
from benchmarks.peers.table import section
from benchmarks.targets import evaluate

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.mark.parametrize("peer", PEERS, ids=lambda p: p.name)
def test_each_peer_installs_the_runtime_as_pinned_and_its_framework(peer) -> None:
    specs = install.requirements(peer)
    names = [install._name(spec) for spec in specs]
    assert names == [*install.RUNTIME, *peer.packages]
    assert not any(name in ("torch", "litestar", "chest-cancer-net") for name in names)


@pytest.mark.parametrize("peer", PEERS, ids=lambda p: p.name)
def test_each_peer_is_sent_the_same_image(peer) -> None:
    call = peer_call(peer, IMAGE, "chest-cancer-net")
    headers = dict(call.headers)
    assert call.method == "POST" and "{" not in call.path
    if peer.body == "raw":
        assert call.body == IMAGE and headers["Content-Type"] == "image/png"
    elif peer.body == "kserve-v1":
        (instance,) = json.loads(call.body)["instances"]
        assert base64.b64decode(instance["image"]["b64"]) == IMAGE
    else:
        field = peer.body.split(":", 1)[1]
        assert headers["Content-Type"] == f"multipart/form-data; boundary={BOUNDARY}"
        assert f'name="{field}"'.encode() in call.body and IMAGE in call.body


def test_a_peer_not_installed_or_failed_says_why(tmp_path, monkeypatch) -> None:
    peer = next(p for p in PEERS if p.name == "kserve")
    monkeypatch.setattr(install, "REPO", tmp_path)
    monkeypatch.setattr(servers.importlib.util, "find_spec", lambda name: None)
    assert servers.peer_python(peer) == (None, "not installed (`make bench-peers` installs it)")
    (tmp_path / ".venv-peer-kserve").mkdir()
    record = {"ok": False, "seconds": 12.0, "packages": [], "error": "No matching distribution found for kserve"}
    (tmp_path / ".venv-peer-kserve" / install.RECORD).write_text(json.dumps(record))
    python, why = servers.peer_python(peer)
    assert python is None and why == "install failed after 12 s: No matching distribution found for kserve"
    record = {"ok": True, "seconds": 40.0, "packages": [], "versions": {"kserve": "0.21.0"}}
    (tmp_path / ".venv-peer-kserve" / install.RECORD).write_text(json.dumps(record))
    python, why = servers.peer_python(peer)
    assert python.endswith(".venv-peer-kserve/bin/python") and why == ".venv-peer-kserve (kserve 0.21.0)"


def test_the_fastapi_peer_falls_back_to_this_interpreter(tmp_path, monkeypatch) -> None:
    pytest.importorskip("fastapi", reason="the `dev` extra brings FastAPI")
    monkeypatch.setattr(install, "REPO", tmp_path)
    python, why = servers.peer_python(next(p for p in PEERS if p.name == "fastapi"))
    assert python == sys.executable and why.startswith("this interpreter")


def test_a_failed_peer_is_in_the_report_and_its_targets_are_not_measured() -> None:
    failed = {"name": "peer: BentoML", "server": "peer", "levels": [], "failed": "did not start: ImportError: x"}
    merged = merge([failed, failed])
    assert merged["failed"] == "did not start: ImportError: x" and merged["failed_rounds"] == 2
    results = {
        "latency": {"ratios": []},
        "http": {"rounds": 2, "scenarios": [merged], "cold_start": {}},
        "machine": {"usable_cpus": 2},
    }
    results["targets"] = evaluate(results)
    peer_checks = [t for t in results["targets"] if "peer" in t["name"]]
    assert len(peer_checks) == 3 and all(t["measured"] is None and t["met"] is None for t in peer_checks)
    table = section(results)
    assert "| BentoML | **failed**: did not start: ImportError: x |" in table
    assert "No peer server was measured in this run" in table
