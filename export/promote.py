"""Move the registry's aliases: which registered version is the challenger, which the champion.

    python -m export.promote --show                                versions, aliases, card, sha256, metrics
    python -m export.promote --version N --alias challenger        the candidate the host shadows
    python -m export.promote --version N --alias champion          the model the host serves
    python -m export.promote --rollback                            the previous champion is champion again

Making N the champion moves the alias `previous-champion` to the version that was champion, and drops
`challenger` from N; `--rollback` swaps `champion` and `previous-champion` (a second one goes forward
again, like deploy/release.sh --rollback). Each move is stamped on the version as the tag
`promoted.<alias>` (UTC time). `--model NAME` names the registered model (default: params.yaml's
export.name); the store is MLFLOW_TRACKING_URI's, else the repo's mlflow.db, as for the stages.

Exit codes: 0 done; 1 refused (a version the export stage did not register); 2 bad arguments; 3 no
such model, version or alias (also: no previous-champion to roll back to); 4 no MLflow store or server.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from export.registry import (
    CHALLENGER,
    CHAMPION,
    NOT_FOUND,
    PREVIOUS,
    REFUSED,
    RegistryError,
    aliases_of,
    connect,
    default_model_name,
    find_version,
    positive,
    registry_errors,
)

SHOWN_METRIC_PARTS = {"ci95_low", "ci95_high", "low", "high"}  # --show prints the values, not the intervals


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export.promote", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--version", type=positive, metavar="N", help="the registered version to promote")
    what.add_argument("--rollback", action="store_true", help="make the previous champion the champion again")
    what.add_argument("--show", action="store_true", help="list the versions with their aliases")
    parser.add_argument("--alias", choices=(CHALLENGER, CHAMPION), help="with --version")
    parser.add_argument("--model", metavar="NAME", help="registered model name (default: params.yaml export.name)")
    args = parser.parse_args(argv)
    if (args.version is None) != (args.alias is None):
        parser.error("--version and --alias go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        name = args.model or default_model_name()
        client = connect()
        if args.show:
            show(client, name)
        elif args.rollback:
            rollback(client, name)
        else:
            promote(client, name, args.version, args.alias)
    except RegistryError as exc:
        print(f"promote: {exc}", file=sys.stderr)
        return exc.code
    return 0


def promote(client, name: str, version: int, alias: str) -> None:
    found = find_version(client, name, version)
    if not any(key.startswith("sha256.") for key in found.tags):
        raise RegistryError(f"{name} version {version} has no sha256 tags: not registered by the export stage", REFUSED)
    aliases = aliases_of(client, name)
    if aliases.get(alias) == version:
        print(f"{name} version {version} is already the {alias}")
        return
    with registry_errors(f"{name} version {version} is gone"):
        if alias == CHAMPION and CHAMPION in aliases:
            client.set_registered_model_alias(name, PREVIOUS, str(aliases[CHAMPION]))
        client.set_registered_model_alias(name, alias, str(version))
        if alias == CHAMPION and aliases.get(CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        stamp(client, name, version, alias)
    before = f" (previous champion: version {aliases[CHAMPION]})" if alias == CHAMPION and CHAMPION in aliases else ""
    print(f"{name} version {version} is the {alias}{before}")


def rollback(client, name: str) -> None:
    aliases = aliases_of(client, name)
    if PREVIOUS not in aliases:
        raise RegistryError(f"model {name!r} has no {PREVIOUS} to roll back to", NOT_FOUND)
    back, current = aliases[PREVIOUS], aliases.get(CHAMPION)
    with registry_errors(f"{name} version {back} is gone"):
        client.set_registered_model_alias(name, CHAMPION, str(back))
        if current is not None and current != back:
            client.set_registered_model_alias(name, PREVIOUS, str(current))
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
        stamp(client, name, back, CHAMPION)
    print(f"{name} version {back} is the champion again (version {current} is the {PREVIOUS})")


def stamp(client, name: str, version: int, alias: str) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.set_model_version_tag(name, str(version), f"promoted.{alias}", now)


def show(client, name: str) -> None:
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases_of(client, name).items():
        by_version.setdefault(version, []).append(alias)
    with registry_errors(f"no registered model {name!r}"):
        found = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version))
    if not found:
        raise RegistryError(f"model {name!r} has no versions", NOT_FOUND)
    print(f"{name} ({len(found)} versions)")
    print(f"{'version':>7}  {'aliases':<28} {'card':<8} {'registered':<17} {'sha256 int8':<12}  metrics")
    for mv in found:
        created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        aliases = ",".join(sorted(by_version.get(int(mv.version), []))) or "-"
        sha = mv.tags.get("sha256.int8", mv.tags.get("sha256.fp32", "-"))[:12]
        card = mv.tags.get("card_version", "-")
        print(f"{mv.version:>7}  {aliases:<28} {card:<8} {created:<17} {sha:<12}  {metrics(mv.tags)}")


def metrics(tags: dict[str, str]) -> str:
    shown = []
    for key, value in sorted(tags.items()):
        parts = key.split(".")
        if parts[0] != "metric" or parts[-1] in SHOWN_METRIC_PARTS:
            continue
        name = ".".join(parts[1:-1] if parts[-1] == "value" else parts[1:])
        try:
            shown.append(f"{name}={float(value):.3f}")
        except ValueError:
            shown.append(f"{name}={value}")
    return " ".join(shown) or "-"


if __name__ == "__main__":
    sys.exit(main())
