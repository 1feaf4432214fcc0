"""`python -m benchmarks.refresh_run [ROUNDS]`: only the model-refresh scenarios of benchmarks.load (no
shadow, shadow at sample 1.0 and 0.25, a reload every 0.5 s), interleaved over ROUNDS (default 3), on
models/ -> benchmarks/results/refresh.{json,md}. A few minutes, where the full `python -m benchmarks`
takes about 17; the full run measures the same scenarios among the others."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from benchmarks import load
from benchmarks.__main__ import REPO, slim_python
from benchmarks.refresh_report import RELOADS, SHADOW_PREFIX, refresh_section
from benchmarks.samples import write_samples
from benchmarks.targets import SERVICE


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 3
    out = REPO / "benchmarks" / "results"
    work = Path("/tmp/refresh-bench")
    work.mkdir(exist_ok=True)
    samples = write_samples(work / "samples")
    model_dir = REPO / "models"
    if not (model_dir / "model.json").is_file():
        print("benchmarks.refresh_run: models/model.json is missing: build it first (dvc repro)", file=sys.stderr)
        return 1
    png = samples["png512"].path.read_bytes()
    target = load.Target(model_dir, REPO / "artifacts" / "model.pt", slim_python(), png, [], work)
    plan = dataclasses.replace(load.Plan(), rounds=rounds, quiet_wait_s=0.0)
    wanted = [s for s in load.scenarios(plan) if s.name in (SERVICE, RELOADS) or s.name.startswith(SHADOW_PREFIX)]
    wanted = [dataclasses.replace(s, levels=(1, 16), mix=False) if s.name == SERVICE else s for s in wanted]
    runs = [[load._run(target, plan, s, r, {}) for s in wanted] for r in range(rounds)]
    http = {"rounds": rounds, "scenarios": [load.merge(list(x)) for x in zip(*runs, strict=True)]}
    (out / "refresh.json").write_text(json.dumps(http, indent=1) + "\n")
    (out / "refresh.md").write_text(refresh_section(http) + "\n")
    print(refresh_section(http))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
