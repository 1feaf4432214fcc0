#!/usr/bin/env bash
# The deploy checks' command-line tools that PyPI does not carry, for CI (Debian or Ubuntu, as root or
# with sudo): promtool from the distribution's prometheus package, unpacked alone (installing the
# package would also start a Prometheus server), and shellcheck when it is missing.
#
#   deploy/ci_tools.sh [BIN_DIR]      default /usr/local/bin
set -euo pipefail

bin=${1:-/usr/local/bin}
if ! command -v promtool >/dev/null; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ] || apt-get update -qq
  (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1) || {
    apt-get update -qq
    (cd "$work" && apt-get download -qq prometheus)
  }
  dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
  install -m 0755 "$work/usr/bin/promtool" "$bin/promtool"
fi
if ! command -v shellcheck >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi
promtool --version | head -n 1
shellcheck --version | sed -n 2p
