"""The int8 model at batch 1 beside OpenVINO's int8 on the same graph (issue 14, target 7): a
benchmark anchor only, never a runtime dependency. `python -m benchmarks.openvino_anchor` (by hand;
`make bench-openvino`) -> benchmarks/results/openvino.{json,md}.

At 128 px it times the served models/model.int8.onnx. At 224 px it exports the same checkpoint
(artifacts/model.pt) with export's own code and quantizes it with export's own recipe (QDQ, u8
activations, s8 per-channel weights), calibrated on the golden input's rings: the speed anchor does
not need the real calibration set. OpenVINO reads the QDQ ONNX as it is (its FakeQuantize path runs
int8 kernels). Both runtimes get the service's thread budget (intra-op threads = usable CPUs, batch 1):
ONNX Runtime with the service's session options, OpenVINO with the LATENCY hint and one stream. Rounds
interleave the two; each figure is the median of the per-round medians.

The CPU's int8 limit is VNNI MACs per cycle x clock x cores, with MACs per cycle taken as one 512-bit
VPDPBUSD per core per cycle (64 u8 x s8 products) and the clock as /proc/cpuinfo reports it (a VM's
nominal clock: a boost clock above it makes shares over 100% possible). The model's MACs are counted
from the ONNX graph (Conv and Gemm/MatMul), at each size.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-openvino"
OUT = REPO / "benchmarks" / "results"
SIZES = (128, 224)
ROUNDS, CALLS = 7, 60
QUIET_WAIT_S = 20.0
VNNI_MACS_PER_CYCLE = 64  # one 512-bit VPDPBUSD per core per cycle: 64 u8 x s8 multiply-adds


def main() -> int:
    if "--time" in sys.argv:  # the worker, in .venv-openvino
        print(json.dumps(time_models(json.loads(sys.argv[sys.argv.index("--time") + 1]))))
        return 0
    install_s = _venv()
    with tempfile.TemporaryDirectory(prefix="openvino-anchor-") as tmp:
        models = {128: str(REPO / "models" / "model.int8.onnx"), 224: str(_export_224(Path(tmp)))}
        macs = {size: count_macs(Path(path)) for size, path in models.items()}
        run = subprocess.run(
            [str(VENV / "bin" / "python"), "-m", "benchmarks.openvino_anchor", "--time", json.dumps(models)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    timings = json.loads(run.stdout.strip().splitlines()[-1])
    results = {"install_s": install_s, "cpu": cpu_limit(), "sizes": {}}
    for size in SIZES:
        t = timings[str(size)]
        limit = results["cpu"]["int8_macs_per_s"]
        results["sizes"][size] = t | {
            "gmacs": round(macs[size] / 1e9, 3),
            "ort_over_openvino": round(t["ort_ms"] / t["openvino_ms"], 2),
            "ort_share_of_limit": round(macs[size] / (t["ort_ms"] / 1e3) / limit, 3),
            "openvino_share_of_limit": round(macs[size] / (t["openvino_ms"] / 1e3) / limit, 3),
        }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "openvino.json").write_text(json.dumps(results, indent=1) + "\n")
    (OUT / "openvino.md").write_text(report(results))
    print(f"openvino anchor: {OUT / 'openvino.md'}")
    return 0


def time_models(models: dict[str, str]) -> dict:
    """Batch-1 medians (ms) of ONNX Runtime and OpenVINO on each model, interleaved in rounds."""
    import numpy as np
    import onnxruntime as ort
    import openvino as ov

    from benchmarks.machine import busy_cpu_s, self_cpu_s, wait_for_quiet
    from service.settings import available_cpus

    threads = available_cpus()
    core = ov.Core()
    out = {}
    for size, path in models.items():
        x = np.random.default_rng(0).standard_normal((1, 1, int(size), int(size)), dtype=np.float32)
        options = ort.SessionOptions()  # the service's (service/inference/engine.py)
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        compiled = core.compile_model(core.read_model(path), "CPU", config)
        request = compiled.create_infer_request()
        runs = {
            "ort_ms": lambda s=session, x=x: s.run(None, {"image": x}),
            "openvino_ms": lambda r=request, x=x: r.infer({0: x}),
        }
        rounds: dict[str, list[float]] = {name: [] for name in runs}
        others = []
        for _ in range(ROUNDS):
            wait_for_quiet(QUIET_WAIT_S)  # the machine is shared: start each round in a quiet moment
            started, busy0, self0 = time.perf_counter(), busy_cpu_s(), self_cpu_s()
            for name, call in runs.items():
                for _ in range(10):
                    call()
                times = []
                for _ in range(CALLS):
                    t0 = time.perf_counter()
                    call()
                    times.append((time.perf_counter() - t0) * 1e3)
                rounds[name].append(statistics.median(times))
            other = (busy_cpu_s() - busy0) - (self_cpu_s() - self0)
            others.append(max(0.0, other) / (time.perf_counter() - started))
        out[size] = {name: round(statistics.median(v), 3) for name, v in rounds.items()}
        out[size]["rounds_ms"] = {name: [round(v, 2) for v in values] for name, values in rounds.items()}
        out[size]["other_cpu_cores"] = round(statistics.median(others), 2)
        out[size] |= {"threads": threads, "versions": {"onnxruntime": ort.__version__, "openvino": ov.__version__}}
        out[size]["openvino_conv_precisions"] = _conv_precisions(compiled)
    return out


def _conv_precisions(compiled) -> dict[str, int]:
    """How many of OpenVINO's compiled convolutions run at each precision (u8 = its int8 kernels)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "Convolution":
            precision = info["runtimePrecision"].astype(str)
            counts[precision] = counts.get(precision, 0) + 1
    return counts


def count_macs(path: Path) -> int:
    """Multiply-accumulates of one image through the graph: Conv and Gemm/MatMul nodes."""
    import onnx
    from onnx import numpy_helper, shape_inference

    proto = shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim] for v in proto.graph.value_info}
    shapes |= {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim] for v in proto.graph.output}
    weights = {t.name: numpy_helper.to_array(t).shape for t in proto.graph.initializer}
    # QDQ graphs feed weights through DequantizeLinear: follow it back to the initializer
    dequant = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    total = 0
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        w = weights.get(node.input[1]) or weights.get(dequant.get(node.input[1], ""))
        out = shapes.get(node.output[0])
        if w is None or out is None:
            continue
        if node.op_type == "Conv":
            per_output = math.prod(w[1:])  # (out, in / groups, kh, kw)
        else:  # Gemm's B is (in, out), or (out, in) with transB; MatMul's is (in, out)
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            per_output = w[1] if trans_b else w[0]
        total += math.prod(out[1:]) * per_output
    return total


def cpu_limit() -> dict:
    from service.settings import available_cpus

    info = Path("/proc/cpuinfo").read_text().splitlines()
    mhz = float(next(line.split(":")[1] for line in info if line.startswith("cpu MHz")))
    model = next(line.split(":")[1].strip() for line in info if line.startswith("model name"))
    cores = available_cpus()
    return {
        "cpu": model,
        "clock_mhz": mhz,
        "cores": cores,
        "vnni_macs_per_cycle": VNNI_MACS_PER_CYCLE,
        "int8_macs_per_s": VNNI_MACS_PER_CYCLE * mhz * 1e6 * cores,
    }


def report(r: dict) -> str:
    cpu = r["cpu"]
    rows = [
        "| input | GMACs | ONNX Runtime int8 ms | OpenVINO int8 ms | ORT / OpenVINO | target | ORT share of limit "
        "| OpenVINO share of limit | OpenVINO's convolutions by precision | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, s in r["sizes"].items():
        met = "met" if s["ort_over_openvino"] <= 1.3 else "**missed**"
        rows.append(
            f"| {size}x{size} | {s['gmacs']} | {s['ort_ms']} | {s['openvino_ms']} | {s['ort_over_openvino']}x "
            f"| <= 1.3x: {met} | {s['ort_share_of_limit']:.0%} | {s['openvino_share_of_limit']:.0%} "
            f"| {', '.join(f'{k} {v}' for k, v in s['openvino_conv_precisions'].items())} | {s['other_cpu_cores']} |"
        )
    versions = next(iter(r["sizes"].values()))["versions"]
    return (
        "# int8 at batch 1: ONNX Runtime beside OpenVINO (benchmark anchor only)\n\n"
        f"`python -m benchmarks.openvino_anchor`; {versions}; {next(iter(r['sizes'].values()))['threads']} threads. "
        f"CPU: {cpu['cpu']}, {cpu['cores']} cores at {cpu['clock_mhz']:.0f} MHz (as /proc/cpuinfo says); int8 limit "
        f"{cpu['vnni_macs_per_cycle']} MACs/cycle/core x clock x cores = {cpu['int8_macs_per_s'] / 1e9:.0f} GMAC/s "
        "(an assumption: one 512-bit VPDPBUSD per core per cycle at the nominal clock). OpenVINO's venv "
        f"(.venv-openvino) took {r['install_s']:.0f} s to build (0 when it was there already). Medians of "
        f"{ROUNDS} interleaved rounds of {CALLS} calls. OpenVINO runs what the QDQ graph leaves in float (the head, "
        "excluded from quantization) at its default precision hint, bf16 on a CPU that has it. Each round starts in a "
        f"quiet moment (at most {QUIET_WAIT_S:.0f} s wait); 'others' CPU' is what other processes took meanwhile "
        "(cores, median).\n\n" + "\n".join(rows) + "\n"
    )


def _export_224(work: Path) -> Path:
    import numpy as np
    import yaml

    from export.onnx_export import export_fp32
    from export.quantize import quantize_int8
    from service.card import golden_input
    from training.model import load_checkpoint

    model, _ = load_checkpoint(REPO / "artifacts" / "model.pt")
    opset = yaml.safe_load((REPO / "params.yaml").read_text())["export"]["opset"]
    export_fp32(model, work / "model224.onnx", 224, opset)
    golden = golden_input(224)[0]
    calibration = np.stack([np.roll(golden, shift, axis=-1) for shift in range(0, 224, 14)])
    quantize_int8(work / "model224.onnx", work / "model224.int8.onnx", calibration)
    return work / "model224.int8.onnx"


def _venv() -> float:
    """Build .venv-openvino (the runtime's onnxruntime, numpy and msgspec as pinned, plus OpenVINO)."""
    if (VENV / "bin" / "python").exists():
        return 0.0
    started = time.perf_counter()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = [s for s in extras["serve"] if s.split(">")[0].split("=")[0] in ("onnxruntime", "numpy", "msgspec")]
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *wanted, *extras["bench-anchor"]], check=True)
    return round(time.perf_counter() - started, 1)


if __name__ == "__main__":
    sys.exit(main())
