"""`python -m benchmarks`: the full benchmark (about 10 minutes on 2 cores) -> benchmarks/results/
{results.json, report.md, latency_vs_concurrency.png}. `--smoke` runs every part in seconds with tiny
counts and a stand-in model (what CI runs), into a temporary folder unless --out is given.

The full run measures the trained model (models/ and artifacts/model.pt: run `dvc repro` first) and
serves it from a slim interpreter: a venv with only the `serve` extra's packages (no torch), made once
in .venv-bench-serve.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from benchmarks.latency import run_latency
from benchmarks.load import SMOKE, Plan, Target, run_load
from benchmarks.machine import busy_cpu_s, loadavg, machine_info, wait_for_quiet
from benchmarks.report import write_report
from benchmarks.samples import real_mix, write_samples
from benchmarks.targets import evaluate
from service.card import read_card

REPO = Path(__file__).resolve().parents[1]
SLIM_VENV = REPO / ".venv-bench-serve"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long run with tiny counts (CI)")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results; smoke: a temp folder)")
    parser.add_argument("--service-python", help="interpreter for the service (default: full run: the slim venv)")
    args = parser.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-smoke-")) if args.smoke else REPO / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-work-") as tmp:
        try:
            results = run(args.smoke, Path(tmp), args.service_python)
        except FileNotFoundError as exc:
            print(f"benchmarks: {exc}", file=sys.stderr)
            return 1
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report = write_report(results, out)
    missed = [t["name"] for t in results["targets"] if t["met"] is False]
    print(f"benchmarks: {report}; targets missed: {', '.join(missed) or 'none'}")
    return 0


def run(smoke: bool, work: Path, service_python: str | None) -> dict:
    started, load_before, clock = _now(), loadavg(), time.monotonic()
    model_dir, checkpoint = _model(smoke, work)
    samples = write_samples(work / "samples")
    if not smoke:
        wait_for_quiet(30.0)
    busy0, children0 = busy_cpu_s(), _children_cpu_s()
    t0 = time.perf_counter()
    latency = run_latency(model_dir, checkpoint, work / "samples", work, smoke)
    latency_other = (busy_cpu_s() - busy0 - (_children_cpu_s() - children0)) / (time.perf_counter() - t0)
    python = service_python or (sys.executable if smoke else slim_python())
    mix = [p.read_bytes() for p in real_mix()][: 16 if smoke else None]
    target = Target(model_dir, checkpoint, python, samples["png512"].path.read_bytes(), mix, work)
    http = run_load(target, SMOKE if smoke else Plan())
    card = read_card(model_dir)
    results = {
        "meta": {
            "mode": "smoke" if smoke else "full",
            "command": "python -m benchmarks" + (" --smoke" if smoke else ""),
            "started": started,
            "finished": _now(),
            "seconds": round(time.monotonic() - clock, 1),
            "commit": _commit(),
            "model": {"name": card.name, "version": card.version, "size": card.input.size, "dir": str(model_dir)},
            "samples": {name: {k: str(v) for k, v in vars(s).items() if k != "path"} for name, s in samples.items()},
            "service_python": _describe(python),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
            "latency_other_cpu_cores": round(max(0.0, latency_other), 2),
        },
        "machine": machine_info(),
        "latency": latency,
        "http": http,
    }
    results["targets"] = evaluate(results)
    return results


def _model(smoke: bool, work: Path) -> tuple[Path, Path]:
    if smoke:
        subprocess.run([sys.executable, "-m", "benchmarks.tinymodel", str(work / "tiny")], cwd=REPO, check=True)
        return work / "tiny" / "models", work / "tiny" / "model.pt"
    model_dir, checkpoint = REPO / "models", REPO / "artifacts" / "model.pt"
    for path in (model_dir / "model.json", checkpoint):
        if not path.is_file():
            raise FileNotFoundError(f"{path.relative_to(REPO)} is missing: build the model first (dvc repro)")
    return model_dir, checkpoint


def slim_python() -> str:
    """The slim venv's interpreter, made on first use with only the `serve` extra's packages."""
    python = SLIM_VENV / "bin" / "python"
    if not python.exists():
        serve = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
        subprocess.run([sys.executable, "-m", "venv", str(SLIM_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *serve], check=True)
    return str(python)


def _describe(python: str) -> str:
    probe = "import importlib.util as u, sys; print(sys.version.split()[0], u.find_spec('torch') is not None)"
    version, has_torch = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.split()
    where = "this interpreter" if python == sys.executable else python.replace(str(REPO) + "/", "")
    return f"{where} (Python {version}; torch {'installed' if has_torch == 'True' else 'not installed'})"


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if done.returncode == 0 else "unknown"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


if __name__ == "__main__":
    sys.exit(main())
