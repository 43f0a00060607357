#!/usr/bin/env bash
# Install (only if missing) the Debian packages the helix project needs.
# Usage: util/deps.sh
# Runs one `apt-get update` + one `apt-get install` only when something is
# missing; otherwise it returns immediately.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(
  build-essential
  nginx-core
  nginx-dev
  libhiredis-dev
  libpq-dev
  libjansson-dev
  libcurl4-openssl-dev
  libyaml-dev
  redis-server
  redis-sentinel
  postgresql
  postgresql-client
  perl
  libwww-perl
  libtest-base-perl
  libipc-run-perl
  libtext-diff-perl
  libtest-longstring-perl
  liblist-moreutils-perl
  python3
  python3-jsonschema
  python3-yaml
  curl
  wrk
  valgrind
  prometheus
  procps
  iproute2
  ca-certificates
  debhelper
  dpkg-dev
  fakeroot
  libssl-dev
  lintian
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

# node and npm for the SDK checks: Debian's, unless a node with its own
# npm is there already (nodesource's bundles npm; Debian's npm would
# replace that node)
if ! command -v npm >/dev/null 2>&1; then
  for pkg in nodejs npm; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
  done
fi

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#PACKAGES[@]} packages already installed, nothing missing"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -E)
  else
    echo "deps: not root and sudo not found; cannot install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "deps: installing ${#missing[@]} missing package(s): ${missing[*]}" >&2
"${SUDO[@]}" apt-get update -q >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2

echo "deps: installed ${#missing[@]} package(s): ${missing[*]}"
