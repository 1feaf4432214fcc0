#!/usr/bin/env bash
# A Python base image made on this machine, for hosts that cannot pull python:3.11-slim (no registry
# reachable): Debian bookworm (Python 3.11, like the wheels built on the host) from debootstrap, trimmed
# the way Debian's slim images are, imported into podman. The root filesystem is cached as a tarball,
# so only the first run downloads (about 50 s).
#
#   deploy/local_base.sh [TAG]      prints TAG when the image is ready
#
# Env: CACHE_DIR (default ~/.cache/chest-cancer-net), DEBIAN_MIRROR (default deb.debian.org).
set -euo pipefail

tag=${1:-localhost/chest-cancer-net-base:bookworm}
cache=${CACHE_DIR:-$HOME/.cache/chest-cancer-net}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
packages=python3,python3-venv
# The cache key names everything that shapes the tarball; change "v1" when the trimming changes.
key=$(printf '%s %s %s v1' "$suite" "$packages" "$mirror" | sha256sum | cut -c1-12)
tarball=$cache/base-$suite-$key.tar

if [ "$(podman image inspect --format '{{index .Labels "base-key"}}' "$tag" 2>/dev/null)" = "$key" ]; then
  echo "$tag"
  exit 0
fi

if [ ! -s "$tarball" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "local_base: debootstrap $suite ($packages) from $mirror" >&2
  debootstrap --variant=minbase --include="$packages" "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 || {
    tail -n 20 "$work/log" >&2
    echo "local_base: debootstrap failed (log above)" >&2
    exit 1
  }
  rm -rf "$work"/root/var/cache/apt/* "$work"/root/var/lib/apt/lists/* \
    "$work"/root/usr/share/doc/* "$work"/root/usr/share/man/* "$work"/root/usr/share/info/* \
    "$work"/root/usr/share/locale/* "$work"/root/var/log/* "$work"/root/tmp/*
  tar --numeric-owner --xattrs -C "$work/root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change "LABEL base-key=$key" \
  "$tarball" "$tag" >/dev/null
echo "$tag"
