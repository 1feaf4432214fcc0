"""Settings: environment -> one frozen object; bad values are one clear line; CPU count and quotas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from service.settings import ENV_VARS, Settings, SettingsError, available_cpus, cgroup_cpu_quota


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.model_dir == Path("models") and s.model_variant == "int8"
    assert s.threads == available_cpus() >= 1 and s.decode_threads == s.threads
    assert s.batching and s.api_key is None and s.cors_origins == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.threads = 3  # type: ignore[misc]


def test_every_variable_is_read() -> None:
    env = {
        "MODEL_DIR": "/m",
        "MODEL_VARIANT": "FP32",
        "INFER_THREADS": "3",
        "DECODE_THREADS": "4",
        "BATCHING": "off",
        "BATCH_MAX_SIZE": "16",
        "BATCH_MAX_WAIT_MS": "5",
        "QUEUE_MAX": "7",
        "REQUEST_TIMEOUT_S": "2.5",
        "MAX_BODY_BYTES": "2048",
        "MAX_PIXELS": "100000",
        "MAX_BATCH_FILES": "3",
        "API_KEY": "0123456789abcdef",
        "CORS_ORIGINS": "https://a.example, http://b.example:8080/",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "debug",
        "DRAIN_TIMEOUT_S": "3",
        "DRAIN_GRACE_S": "1",
        "MAX_CONNECTIONS": "10",
        "MAX_INFLIGHT_BODY_BYTES": "4096",
        "KEEPALIVE_S": "2",
        "HEADER_TIMEOUT_S": "1.5",
        "OOD_POLICY": "Flag",
        "DRIFT_WINDOW": "500",
        "DRIFT_WINDOW_S": "60",
        "FORWARDED_ALLOW_IPS": "10.0.0.5, 172.29.253.0/29,::1",
        "DICOM_ALLOW_MODALITIES": "ct, MR,CT",
        "SHADOW_MODEL_DIR": "/candidate",
        "SHADOW_SAMPLE": "0.25",
        "SHADOW_QUEUE_MAX": "8",
        "ADMIN_API_KEY": "fedcba9876543210",
    }
    assert set(env) == set(ENV_VARS)
    s = Settings.from_env(env)
    assert s == Settings(
        model_dir=Path("/m"),
        model_variant="fp32",
        threads=3,
        decode_threads=4,
        batching=False,
        batch_max_size=16,
        batch_max_wait_ms=5.0,
        queue_max=7,
        request_timeout_s=2.5,
        max_body_bytes=2048,
        max_pixels=100000,
        max_batch_files=3,
        api_key="0123456789abcdef",
        cors_origins=("https://a.example", "http://b.example:8080"),
        log_format="text",
        log_level="DEBUG",
        drain_timeout_s=3.0,
        drain_grace_s=1.0,
        max_connections=10,
        max_inflight_body_bytes=4096,
        keepalive_s=2.0,
        header_timeout_s=1.5,
        ood_policy="flag",
        drift_window=500,
        drift_window_s=60.0,
        forwarded_allow_ips=("10.0.0.5/32", "172.29.253.0/29", "::1/128"),
        dicom_allow_modalities=("CT", "MR"),
        shadow_model_dir=Path("/candidate"),
        shadow_sample=0.25,
        shadow_queue_max=8,
        admin_api_key="fedcba9876543210",
    )
    described = s.describe()
    assert described["api_key"] == described["admin_api_key"] == "set"
    assert "0123456789abcdef" not in str(described) and "fedcba9876543210" not in str(described)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MODEL_VARIANT", "int4"),
        ("OOD_POLICY", "ignore"),
        ("DRIFT_WINDOW", "5"),
        ("INFER_THREADS", "0"),
        ("INFER_THREADS", "two"),
        ("BATCHING", "maybe"),
        ("BATCH_MAX_WAIT_MS", "nan"),
        ("QUEUE_MAX", "-1"),
        ("MAX_BODY_BYTES", "1e9"),
        ("API_KEY", "short"),
        ("CORS_ORIGINS", "evil.example"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("FORWARDED_ALLOW_IPS", "*"),
        ("FORWARDED_ALLOW_IPS", "10.0.0.1,proxy.internal"),
        ("DICOM_ALLOW_MODALITIES", ","),
        ("DICOM_ALLOW_MODALITIES", "CT;MR"),
        ("SHADOW_SAMPLE", "1.5"),
        ("SHADOW_QUEUE_MAX", "0"),
        ("ADMIN_API_KEY", "short"),
    ],
)
def test_bad_values_are_one_clear_line(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({var: value})
    message = str(info.value)
    assert "\n" not in message and " is invalid: expected" in message
    if var in ("API_KEY", "ADMIN_API_KEY"):
        assert message.startswith(f"{var} is invalid") and value not in message  # no secret in logs
    else:
        assert message.startswith(f"{var}={value!r} is invalid")


def test_body_budget_smaller_than_one_body_is_refused() -> None:
    with pytest.raises(SettingsError, match="MAX_INFLIGHT_BODY_BYTES must be at least MAX_BODY_BYTES"):
        Settings.from_env({"MAX_BODY_BYTES": "20000", "MAX_INFLIGHT_BODY_BYTES": "10000"})


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path) <= 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 0.5
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_no_cgroup(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "missing") is None


def test_the_admin_key_must_differ_from_the_client_key() -> None:
    key = "0123456789abcdef"
    with pytest.raises(SettingsError, match="ADMIN_API_KEY must differ from API_KEY") as info:
        Settings.from_env({"API_KEY": key, "ADMIN_API_KEY": key})
    assert key not in str(info.value)
