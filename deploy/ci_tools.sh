#!/usr/bin/env bash
# The deploy checks' command-line tools that PyPI does not carry, for CI (Debian or Ubuntu, as root or
# with sudo): promtool from the distribution's prometheus package and caddy from its caddy package,
# each unpacked alone (installing the packages would also start a Prometheus or Caddy server); then
# the shellcheck and curl packages where those are missing. kubectl (for `kubectl kustomize`) is not
# packaged by Debian; it comes with the CI machines (GitHub's runners, the project's image).
#
#   deploy/ci_tools.sh [BIN_DIR]      default /usr/local/bin
set -euo pipefail

bin=${1:-/usr/local/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# unpack PACKAGE PATH: install PATH (e.g. usr/bin/promtool) from the distribution's PACKAGE into $bin.
unpack() {
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ] || apt-get update -qq
  (cd "$work" && apt-get download -qq "$1" >/dev/null 2>&1) || {
    apt-get update -qq
    (cd "$work" && apt-get download -qq "$1")
  }
  dpkg-deb --fsys-tarfile "$work/$1"_*.deb | tar -x -C "$work" "./$2"
  install -m 0755 "$work/$2" "$bin/$(basename "$2")"
}

command -v promtool >/dev/null || unpack prometheus usr/bin/promtool
command -v caddy >/dev/null || unpack caddy usr/bin/caddy
for tool in shellcheck curl; do
  if ! command -v "$tool" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null
  fi
done
promtool --version | head -n 1
shellcheck --version | sed -n 2p
echo "caddy $(caddy version)"
if command -v kubectl >/dev/null; then
  kubectl version --client | head -n 1
else
  echo "kubectl: not installed (the kustomize checks skip)"
fi
