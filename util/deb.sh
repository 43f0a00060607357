#!/usr/bin/env bash
# "make deb": the Debian package libnginx-mod-http-helix, built as Debian
# builds libnginx-mod-* packages (debian/: dh with dh-sequence-nginx, the
# nginx_mod build system, dh_nginx), from a copy of the tree in build/deb/
# so the checkout stays clean.  No network: the build dependencies are
# installed by util/deps.sh.  The test suite does not run in the package
# build (debian/rules); lintian checks the result when it is installed.
#
#   util/deb.sh            -> build/libnginx-mod-http-helix_<version>_<arch>.deb
#
# The version is debian/changelog's; it must be the one the module reports
# (NGX_HTTP_HELIX_VERSION in src/core/ngx_http_helix.h).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

pkg=libnginx-mod-http-helix
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
upstream=${version%-*}
module=$(sed -n 's/^#define NGX_HTTP_HELIX_VERSION *"\(.*\)"$/\1/p' \
         src/core/ngx_http_helix.h)
if [[ $upstream != "$module" ]]; then
    echo "deb: debian/changelog says $version, the module says $module" \
         "(src/core/ngx_http_helix.h); a release changes both (dch -v)" >&2
    exit 1
fi

out=$top/build/deb
src=$out/$pkg-$upstream
rm -rf "$out"
mkdir -p "$src"

# the tracked and new files, not build/ or test leftovers (.gitignore)
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$top" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do
              [[ -e $f ]] && printf '%s\0' "$f"
          done \
        | tar --null -T - -cf - | tar -xf - -C "$src"
else
    tar --exclude=./build --exclude='./t/servroot*' -cf - . \
        | tar -xf - -C "$src"
fi

echo "deb: building $pkg $version ($arch) in build/deb/" >&2
(cd "$src" && dpkg-buildpackage -b -us -uc) > "$out/build.log" 2>&1 || {
    tail -40 "$out/build.log" >&2
    echo "deb: dpkg-buildpackage failed; the whole log: build/deb/build.log" >&2
    exit 1
}

deb=${pkg}_${version}_${arch}.deb
cp "$out/$deb" "$top/build/$deb"

if command -v lintian >/dev/null 2>&1; then
    lintian --fail-on error --info "$out/${pkg}_${version}_${arch}.changes" \
        | tee "$out/lintian.log" >&2
else
    echo "deb: lintian is not installed, not checked" >&2
fi

echo "deb: build/$deb"
