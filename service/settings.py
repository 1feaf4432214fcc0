"""Service settings: environment variables -> one frozen, validated object.

A bad value raises SettingsError with one line naming the variable, the value and what is allowed;
`python -m service` prints that line and exits 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from service.inputs.limits import DEFAULT_DICOM_MODALITIES, DEFAULT_MAX_PIXELS

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_MODALITY_CODE = re.compile(r"[A-Z0-9_]{1,16}")  # a DICOM code string (CS) without spaces


class SettingsError(ValueError):
    """One environment variable has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    model_dir: Path = Path("models")
    model_variant: str = "int8"  # int8 | fp32: which file of the card to load
    threads: int = 1  # ONNX Runtime intra-op threads; from_env derives it from the usable CPUs
    decode_threads: int = 1  # worker threads for decoding and drawing heatmaps
    batching: bool = True
    batch_max_size: int = 8
    # Greedy by default: a batch is whatever queued while the previous one ran. Waiting for more only
    # pays where batched inference is cheaper per image than single (on 2 CPUs it measured dearer).
    batch_max_wait_ms: float = 0.0  # waited only while more admitted requests are still decoding
    queue_max: int = 64  # images admitted (decoding, queued or running) before 503 Overloaded
    request_timeout_s: float = 10.0  # per-request deadline: decode + queue + inference
    max_body_bytes: int = 8 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS  # checked from the header before any pixel is decoded
    max_batch_files: int = 16
    api_key: str | None = None  # when set, prediction endpoints need X-API-Key or Bearer
    cors_origins: tuple[str, ...] = ()  # CORS stays closed unless origins are listed
    log_format: str = "json"  # json | text
    log_level: str = "INFO"
    drain_timeout_s: float = 10.0  # SIGTERM: time in-flight work gets to finish
    drain_grace_s: float = 0.0  # SIGTERM: time to keep serving while reporting not ready
    max_connections: int = 64  # requests in progress (probes excepted) before a JSON 503; see connections.py
    # Request bodies admitted at once, counted by Content-Length (a chunked body counts as MAX_BODY_BYTES):
    # 64 bodies of 8 MiB in flight took the process past 900 MB, which a 1 GiB host cannot give.
    max_inflight_body_bytes: int = 64 * 1024 * 1024
    keepalive_s: float = 5.0
    header_timeout_s: float = 5.0  # a connection's request headers must arrive within this
    # abstain: an image the OOD gate flags gets no label (200, "abstained": true); flag: the label stays,
    # marked; off: no OOD score at all. See service/trust/gate.py.
    ood_policy: str = "abstain"
    drift_window: int = 1000  # images in the drift window (also bounded by DRIFT_WINDOW_S)
    drift_window_s: float = 3600.0
    # Reverse proxies (addresses or networks) whose X-Forwarded-For / -Proto the service believes, so that
    # the access log shows the real client. Empty: those headers are ignored and the peer is the client.
    forwarded_allow_ips: tuple[str, ...] = ()
    # DICOM Modality values decoded; any other is a 422. The model has only seen CT: widen it only to study
    # what it does with other modalities (the OOD gate is what stands between them and a label).
    dicom_allow_modalities: tuple[str, ...] = tuple(sorted(DEFAULT_DICOM_MODALITIES))
    # A candidate model run beside the primary on a sampled share of requests, off the critical path;
    # see service/inference/shadow.py. Its comparisons are dropped (and counted) when its queue is full.
    shadow_model_dir: Path | None = None
    shadow_sample: float = 1.0
    shadow_queue_max: int = 64
    # When set, /admin/* (model reload, promotion, shadow) exists and needs X-Admin-Key: this key.
    admin_api_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default os.environ); unset ones keep their defaults."""
        env = os.environ if env is None else env
        cpus = available_cpus()
        values: dict[str, Any] = {"threads": cpus, "decode_threads": cpus}
        for name, (var, parse) in _PARSERS.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw.strip())
            except ValueError as exc:
                shown = var if var in _SECRET else f"{var}={raw!r}"  # never echo a secret
                raise SettingsError(f"{shown} is invalid: {exc}") from None
        settings = cls(**values)
        if settings.admin_api_key is not None and settings.admin_api_key == settings.api_key:
            raise SettingsError("ADMIN_API_KEY must differ from API_KEY: a client key must not swap models")
        if settings.max_inflight_body_bytes < settings.max_body_bytes:
            raise SettingsError(
                "MAX_INFLIGHT_BODY_BYTES must be at least MAX_BODY_BYTES "
                f"({settings.max_inflight_body_bytes} < {settings.max_body_bytes}): no full-size body could be admitted"
            )
        return settings

    def describe(self) -> dict[str, Any]:
        """For the start-up log line: every setting, the API key only as set/unset."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["api_key"] = "set" if self.api_key else "unset"
        out["admin_api_key"] = "set" if self.admin_api_key else "unset"
        out["model_dir"] = str(self.model_dir)
        out["shadow_model_dir"] = None if self.shadow_model_dir is None else str(self.shadow_model_dir)
        out["cors_origins"] = list(self.cors_origins)
        out["forwarded_allow_ips"] = list(self.forwarded_allow_ips)
        out["dicom_allow_modalities"] = list(self.dicom_allow_modalities)
        return out


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number from {low} to {high}") from None
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return parse


def _float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected a number from {low:g} to {high:g}") from None
        if not low <= value <= high:  # also refuses nan
            raise ValueError(f"expected a number from {low:g} to {high:g}")
        return value

    return parse


def _choice(*allowed: str, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError("expected on or off")


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValueError("expected a comma-separated list of http(s):// origins")
    return origins


def _networks(raw: str) -> tuple[str, ...]:
    # No "*": trusting every peer would let any client write the address the log shows.
    networks = []
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError("expected a comma-separated list of IP addresses or networks (CIDR)") from None
    return tuple(networks)


def _modalities(raw: str) -> tuple[str, ...]:
    codes = tuple(sorted({c.strip().upper() for c in raw.split(",") if c.strip()}))
    if not codes or not all(_MODALITY_CODE.fullmatch(c) for c in codes):
        raise ValueError("expected a comma-separated list of DICOM Modality codes such as CT,MR")
    return codes


def _api_key(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("expected at least 16 characters")
    return raw


_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "model_dir": ("MODEL_DIR", Path),
    "model_variant": ("MODEL_VARIANT", _choice("int8", "fp32")),
    "threads": ("INFER_THREADS", _int(1, 256)),
    "decode_threads": ("DECODE_THREADS", _int(1, 256)),
    "batching": ("BATCHING", _bool),
    "batch_max_size": ("BATCH_MAX_SIZE", _int(1, 256)),
    "batch_max_wait_ms": ("BATCH_MAX_WAIT_MS", _float(0.0, 1000.0)),
    "queue_max": ("QUEUE_MAX", _int(1, 100_000)),
    "request_timeout_s": ("REQUEST_TIMEOUT_S", _float(0.01, 600.0)),
    "max_body_bytes": ("MAX_BODY_BYTES", _int(1024, 1024**3)),
    "max_pixels": ("MAX_PIXELS", _int(1024, 1 << 28)),
    "max_batch_files": ("MAX_BATCH_FILES", _int(1, 256)),
    "api_key": ("API_KEY", _api_key),
    "cors_origins": ("CORS_ORIGINS", _origins),
    "log_format": ("LOG_FORMAT", _choice("json", "text")),
    "log_level": ("LOG_LEVEL", _choice(*LOG_LEVELS, upper=True)),
    "drain_timeout_s": ("DRAIN_TIMEOUT_S", _float(0.0, 600.0)),
    "drain_grace_s": ("DRAIN_GRACE_S", _float(0.0, 600.0)),
    "max_connections": ("MAX_CONNECTIONS", _int(1, 100_000)),
    "max_inflight_body_bytes": ("MAX_INFLIGHT_BODY_BYTES", _int(1024, 1024**4)),
    "keepalive_s": ("KEEPALIVE_S", _float(0.1, 600.0)),
    "header_timeout_s": ("HEADER_TIMEOUT_S", _float(0.1, 600.0)),
    "ood_policy": ("OOD_POLICY", _choice("abstain", "flag", "off")),
    "drift_window": ("DRIFT_WINDOW", _int(10, 1_000_000)),
    "drift_window_s": ("DRIFT_WINDOW_S", _float(1.0, 30 * 86400.0)),
    "forwarded_allow_ips": ("FORWARDED_ALLOW_IPS", _networks),
    "dicom_allow_modalities": ("DICOM_ALLOW_MODALITIES", _modalities),
    "shadow_model_dir": ("SHADOW_MODEL_DIR", Path),
    "shadow_sample": ("SHADOW_SAMPLE", _float(0.0, 1.0)),
    "shadow_queue_max": ("SHADOW_QUEUE_MAX", _int(1, 100_000)),
    "admin_api_key": ("ADMIN_API_KEY", _api_key),
}
_SECRET = frozenset({"API_KEY", "ADMIN_API_KEY"})
ENV_VARS = {var: name for name, (var, _) in _PARSERS.items()}


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup (v2 or v1) CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU quota in CPUs (e.g. 1.5), or None when there is none or it cannot be read."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # v2: "max 100000" | "150000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):  # v1
        try:
            quota_us = int((root / folder / "cpu.cfs_quota_us").read_text())
            period_us = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None
