"""`python -m benchmarks.peers.install [NAME ...]` (`make bench-peers`): one venv per peer server,
.venv-peer-NAME, with the packages its module needs: onnxruntime, numpy, pillow and msgspec as the
`serve` extra pins them, plus the framework as the `bench-peers` extra pins it. Frameworks pin
conflicting versions of the same libraries (uvicorn, fastapi, pydantic), so each gets its own venv and
none goes into .venv. A venv already built is kept; each install's outcome, time and, on failure, the
reason are written to .venv-peer-NAME/install.json, which the benchmark reports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from benchmarks.peers import PEERS, Peer

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ("onnxruntime", "numpy", "pillow", "msgspec")  # what service.inputs, card and decision import
RECORD = "install.json"


def venv(peer: Peer) -> Path:
    return REPO / f".venv-peer-{peer.name}"


def status(peer: Peer) -> dict | None:
    """The recorded install of `peer` ({ok, seconds, packages, error}), None if never tried."""
    path = venv(peer) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def requirements(peer: Peer) -> list[str]:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    specs = {_name(spec): spec for spec in extras["serve"] + extras["bench-peers"]}
    return [specs[name] for name in (*RUNTIME, *peer.packages)]


def install(peer: Peer) -> dict:
    """Build the peer's venv unless it is built; returns its install record."""
    done = status(peer)
    if done and done["ok"]:
        return done
    where, started = venv(peer), time.perf_counter()
    packages = requirements(peer)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(where)],
        [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages],
    ]
    error = ""
    for step in steps:
        run = subprocess.run(step, capture_output=True, text=True)
        if run.returncode != 0:
            error = " ".join((run.stderr or run.stdout).strip().splitlines()[-3:])[-600:]
            break
    record = {"ok": not error, "seconds": round(time.perf_counter() - started, 1), "packages": packages}
    if error:
        record["error"] = error
    else:
        record["versions"] = _versions(where, peer)
    (where / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return record


def _versions(where: Path, peer: Peer) -> dict[str, str]:
    names = [*RUNTIME, *peer.packages]
    probe = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    run = subprocess.run([str(where / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def _name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0].lower()


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    chosen = [p for p in PEERS if not names or p.name in names]
    total = time.perf_counter()
    for peer in chosen:
        record = install(peer)
        outcome = "ok" if record["ok"] else f"FAILED: {record['error']}"
        print(f"bench-peers: {peer.name}: {record['seconds']:.0f} s, {outcome}", flush=True)
    print(f"bench-peers: {time.perf_counter() - total:.0f} s in all", flush=True)
    return 0  # a failed peer is reported by the benchmark, it does not stop it


if __name__ == "__main__":
    sys.exit(main())
