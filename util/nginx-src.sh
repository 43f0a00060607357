#!/usr/bin/env bash
# nginx 1.22.1 as Debian ships it (Debian's source package, its patches
# applied) in build/src/nginx-1.22.1, for builds of nginx itself: the
# AddressSanitizer suite (util/asan.sh) and the fuzzers (util/fuzz.sh).
# Prints the tree's path.  Installs what it needs: dpkg-dev, and a deb-src
# entry for the system's Debian archive when there is none
# (/etc/apt/sources.list.d/helix-deb-src.sources).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
src=$top/build/src
tree=$src/nginx-1.22.1

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo -E)
fi

if [ -f "$tree/debian/changelog" ] && [ -f "$tree/.helix-complete" ]; then
    echo "$tree"
    exit 0
fi

if ! dpkg-query -W -f='${Status}' dpkg-dev 2>/dev/null \
    | grep -q "install ok installed"
then
    "${SUDO[@]}" apt-get update -q >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends dpkg-dev >&2
fi

if ! apt-cache showsrc nginx 2>/dev/null | grep -q '^Package: nginx'; then
    # shellcheck disable=SC1091
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")

    echo "nginx-src: adding deb-src for $codename" >&2
    "${SUDO[@]}" tee /etc/apt/sources.list.d/helix-deb-src.sources \
        >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    "${SUDO[@]}" apt-get update -q >&2
fi

rm -rf "$src"
mkdir -p "$src"

# the installed version when the archive still has it, else any other
# 1.22.1 it lists (a mirror may list a version it no longer holds): nginx
# and the module are built in the same tree, so any of them is consistent
vers=$( { dpkg-query -W -f='${Version}\n' nginx-core 2>/dev/null || true
          apt-cache showsrc nginx | awk '/^Version: 1\.22\.1-/ {print $2}'
        } | awk 'NF && !seen[$0]++')

for ver in $vers; do
    if ( cd "$src" && apt-get source -q "nginx=$ver" ) >&2; then
        break
    fi
    rm -rf "$tree"
done

if [ ! -f "$tree/debian/changelog" ]; then
    echo "nginx-src: no nginx 1.22.1 source package found" >&2
    exit 1
fi

touch "$tree/.helix-complete"
echo "$tree"
