"""The MLflow model registry as the operator's commands see it (export.promote, export.pull).

The export stage registers every model that passed its gates as a new version (export/register.py);
these commands only read versions and move aliases, so they never create a store, an experiment or
a run. Exit codes, shared by both commands:

    0  done
    1  refused: the files do not match their card, the output folder is in the way, a version that the
       export stage did not register
    2  bad arguments
    3  no such registered model, version or alias (a rollback with no previous-champion, too)
    4  no MLflow store or tracking server to talk to (or it failed)
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from training.params import PARAMS_FILE, load_params
from training.tracking import DEFAULT_STORE, _mlflow

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
REFUSED, BAD_ARGS, NOT_FOUND, UNREACHABLE = 1, 2, 3, 4
# A command fails in seconds when the tracking server is down, instead of mlflow's default of seven
# retries with backoff (minutes); MLFLOW_HTTP_REQUEST_* in the environment still win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class RegistryError(Exception):
    """One line for the operator and the exit code that goes with it."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def tracking_uri() -> str:
    # The same store the pipeline's stages log to (training.tracking.configure).
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE.resolve()}"


def connect():
    """An MlflowClient on the configured store; a local store that does not exist is an error, not a
    new empty one."""
    uri = tracking_uri()
    local = _local_path(uri)
    if local is not None and not local.exists():
        raise RegistryError(
            f"no MLflow store at {local}: run the pipeline (`dvc repro`) here first, or set MLFLOW_TRACKING_URI",
            UNREACHABLE,
        )
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return _mlflow().MlflowClient(tracking_uri=uri, registry_uri=uri)


def _local_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    if "://" not in uri:  # a bare path is a file store
        return Path(uri)
    return None


@contextlib.contextmanager
def registry_errors(missing: str) -> Iterator[None]:
    """Map mlflow's exceptions from the calls inside: "not found" -> NOT_FOUND with `missing` as the
    message, anything else (connection refused, a server error) -> UNREACHABLE."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.error_code
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in detail.lower():
            raise RegistryError(missing, NOT_FOUND) from None
        raise RegistryError(f"the MLflow registry at {tracking_uri()} failed: {detail}", UNREACHABLE) from None


def positive(text: str) -> int:
    """argparse type of a version number."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ...)")
    return int(text)


def default_model_name() -> str:
    """The registered model's name is the card's (params.yaml export.name), unless --model says."""
    if not PARAMS_FILE.exists():
        raise RegistryError(f"no {PARAMS_FILE} here to name the model: pass --model NAME", BAD_ARGS)
    return load_params(PARAMS_FILE).export.name


def registered(client, name: str):
    with registry_errors(f"no registered model {name!r} in {tracking_uri()} (the export stage registers it)"):
        return client.get_registered_model(name)


def aliases_of(client, name: str) -> dict[str, int]:
    """{alias: version} of the registered model (search results do not carry aliases; the model does)."""
    return {alias: int(version) for alias, version in registered(client, name).aliases.items()}


def find_version(client, name: str, version: int | None = None, alias: str | None = None):
    """The ModelVersion named by number or by alias."""
    aliases = aliases_of(client, name)
    if alias is not None:
        if alias not in aliases:
            have = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
            raise RegistryError(f"model {name!r} has no alias {alias!r} (aliases: {have})", NOT_FOUND)
        version = aliases[alias]
    with registry_errors(f"model {name!r} has no version {version} (versions: {', '.join(versions(client, name))})"):
        return client.get_model_version(name, str(version))


def versions(client, name: str) -> list[str]:
    with registry_errors(f"no registered model {name!r}"):
        found = client.search_model_versions(f"name = '{name}'")
    return [str(v) for v in sorted(int(mv.version) for mv in found)]
