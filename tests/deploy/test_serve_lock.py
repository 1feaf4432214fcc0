"""deploy/requirements.serve.txt (the image's packages) still satisfies pyproject's `serve` extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("deploy_lock", ROOT / "deploy" / "lock.py")
assert _spec and _spec.loader
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)
LOCK = lock.LOCK

HOW = "the serve extra changed: regenerate the lock with `python deploy/lock.py`"


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not pinned with =="
            assert canonicalize_name(name) not in out, f"{name} is pinned twice"
            out[canonicalize_name(name)] = Version(version)
    return out


def test_every_serve_requirement_is_pinned_within_its_range() -> None:
    locked = pins()
    for text in lock.serve_requirements():
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in {LOCK.name}: {HOW}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{requirement.name}=={locked[name]} is outside {requirement.specifier}: {HOW}"
        )


def test_the_lock_has_no_training_packages() -> None:
    assert not {"torch", "torchvision", "onnx", "mlflow", "dvc", "optuna"} & set(pins())
