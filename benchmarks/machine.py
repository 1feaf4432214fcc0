"""What the numbers were measured on, and who else used the CPU meanwhile (Linux /proc).

The benchmark machine is small and shared, so every measured phase records the CPU time of the
whole machine beside its own processes' time: the difference is what other processes took.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchmarks.harness.process import RssSampler, tree_pids

TICK = os.sysconf("SC_CLK_TCK")
LIBRARIES = ("onnxruntime", "numpy", "pillow", "litestar", "uvicorn", "msgspec", "torch", "torchvision")


def machine_info() -> dict:
    """CPU model, cores, memory, kernel and library versions."""
    from service.settings import available_cpus

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cpu_model": model or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": available_cpus(),
        "int8_flags": sorted(f for f in flags if f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in LIBRARIES},
    }


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all CPUs, idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime of `pid` and each of its descendants, by pid."""
    out = {}
    for member in tree_pids(pid):
        try:
            out[member] = process_cpu_s(member)
        except OSError:  # exited meanwhile
            continue
    return out


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Usage:
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    other_cpu_s: float  # everyone else on the machine
    rss_peak_mb: float
    rss_mean_mb: float

    def summary(self) -> dict:
        wall = max(self.wall_s, 1e-9)
        return {
            "server_cpu_cores": round(self.server_cpu_s / wall, 2),
            "client_cpu_cores": round(self.client_cpu_s / wall, 2),
            "other_cpu_cores": round(max(0.0, self.other_cpu_s) / wall, 2),
            "server_rss_peak_mb": round(self.rss_peak_mb, 1),
            "server_rss_mean_mb": round(self.rss_mean_mb, 1),
        }


class Meter:
    """A phase's CPU (server, client, everyone else) and the server's RSS; `stop()` returns its Usage.
    The server is its whole process tree (a framework's supervisor and workers alike): CPU summed over
    the processes alive at both ends of the phase, RSS summed at each sample."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self._rss = RssSampler(pid, interval_s, tree=True).start()
        self._server0 = tree_cpu_s(pid)
        self._start = (time.perf_counter(), busy_cpu_s(), self_cpu_s())

    def stop(self) -> Usage:
        end = (time.perf_counter(), busy_cpu_s(), self_cpu_s())
        server1 = tree_cpu_s(self.pid)
        self._rss.stop()
        wall, busy, client = (b - a for a, b in zip(self._start, end, strict=True))
        server = sum(cpu - self._server0[pid] for pid, cpu in server1.items() if pid in self._server0)
        return Usage(wall, server, client, busy - server - client, self._rss.peak, self._rss.mean)


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.25, window_s: float = 1.0) -> dict:
    """Wait (at most `max_wait_s`) until other processes use under `threshold_cores` over a window.

    The machine is shared: starting a phase in a quiet moment keeps other people's bursts out of it.
    Returns how long it waited and how busy the last window was.
    """
    started = time.perf_counter()
    while True:
        t0, b0, s0 = time.perf_counter(), busy_cpu_s(), self_cpu_s()
        time.sleep(window_s)
        other = max(0.0, (busy_cpu_s() - b0) - (self_cpu_s() - s0)) / (time.perf_counter() - t0)
        waited = time.perf_counter() - started
        if other < threshold_cores or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "other_cpu_cores": round(other, 2)}
