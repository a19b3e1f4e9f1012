#!/usr/bin/env bash
# A local stand-in for the `python:3.11-slim` base image, for machines that reach no image
# registry (our CI). A machine that can pull keeps the stock image: this script does nothing
# when an image of that name is already there.
#
#   bash deploy/containers/base.sh [TAG]        # default TAG python:3.11-slim
#
# Debian bookworm (minbase) with its Python 3.11 and venv (no pip: the image build brings uv in a
# throwaway venv), built with debootstrap and imported into the engine in $DOCKER_HOST. The host's CA bundle is copied in (HTTPS to PyPI
# goes through this machine's CA), and pip, requests and uv are pointed at it.
set -euo pipefail

TAG=${1:-python:3.11-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DOCKER=${DOCKER:-docker}

if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  echo "base: $TAG already present" >&2
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "base: debootstrap is not installed (apt-get install debootstrap)" >&2
  exit 1
}

root=$(mktemp -d "${TMPDIR:-/var/tmp}/tabular-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
debootstrap --variant=minbase \
  --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || {
  tail -n 20 "$root.log" >&2
  exit 1
}
rm -f "$root.log"
cp "$CA" "$root/etc/ssl/certs/ca-certificates.crt"
# What a slim image does not carry: package lists and caches, documentation, manuals, message
# translations.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
  "$root"/var/log/*.log "$root"/var/log/apt/*
bundle=/etc/ssl/certs/ca-certificates.crt
tar --numeric-owner -C "$root" -c . | "$DOCKER" import \
  --change "ENV LANG=C.UTF-8" \
  --change "ENV PIP_BREAK_SYSTEM_PACKAGES=1" \
  --change "ENV PIP_DISABLE_PIP_VERSION_CHECK=1" \
  --change "ENV SSL_CERT_FILE=$bundle" \
  --change "ENV PIP_CERT=$bundle" \
  --change "ENV REQUESTS_CA_BUNDLE=$bundle" \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
echo "base: $TAG built from Debian bookworm in $(($(date +%s) - start)) s" \
  "($("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%d MB", $1/1e6}'))" >&2
