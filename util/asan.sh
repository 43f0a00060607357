#!/usr/bin/env bash
# "make test-asan": nginx 1.22.1 built from Debian's own source package
# (Debian's patches and configure flags) and the module built in the same
# tree, both with AddressSanitizer, in build/asan/; then the whole suite
# (or the prove arguments given) against that nginx and that module.
#
# Usage: util/asan.sh build          build only
#        util/asan.sh [prove args]   build, then run util/test.sh
#
# The source comes from util/nginx-src.sh (which installs what it needs).
# ASan reports go to build/asan/logs/asan.PID (ASAN_OPTIONS
# log_path); the test runner fails the test block during which one
# appeared (TEST_NGINX_ASAN_LOGS).  Leak checking is off: nginx's master
# and workers exit without freeing their pools by design.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
asan=$top/build/asan

build() {
    local ngx=$asan/nginx flags src

    src=$("$top/util/nginx-src.sh")

    if [ ! -f "$ngx/debian/changelog" ]; then
        rm -rf "$ngx"
        mkdir -p "$asan"
        cp -a "$src" "$ngx"
    fi

    flags="-g -O1 -fno-omit-frame-pointer -fsanitize=address"
    flags="$flags -fstack-protector-strong -Wformat -Werror=format-security"
    flags="$flags -fPIC"

    # Debian's own configure flags (nginx-dev's conf_flags), and the static
    # modules nginx-core adds to them (the tests use sub_filter, say)
    # shellcheck disable=SC1091
    . /usr/share/nginx/src/conf_flags
    NGX_CONF_FLAGS+=(--with-http_addition_module --with-http_flv_module
                     --with-http_gunzip_module --with-http_gzip_static_module
                     --with-http_mp4_module --with-http_random_index_module
                     --with-http_secure_link_module --with-http_sub_module
                     --with-cc-opt="$flags" --with-ld-opt="-fsanitize=address"
                     --add-dynamic-module="$top")

    if [ ! -f "$ngx/objs/Makefile" ] || [ "$top/config" -nt "$ngx/objs/Makefile" ] \
        || [ "${NGX_CONF_FLAGS[*]}" != "$(cat "$asan/configure.args" 2>/dev/null)" ]
    then
        ( cd "$ngx" && ./configure "${NGX_CONF_FLAGS[@]}" ) \
            > "$asan/configure.log" 2>&1 || {
            tail -20 "$asan/configure.log" >&2
            exit 1
        }
        echo "${NGX_CONF_FLAGS[*]}" > "$asan/configure.args"
    fi

    make -C "$ngx" -f objs/Makefile -j"$(nproc)" binary modules \
        > "$asan/make.log" 2>&1 || { tail -40 "$asan/make.log" >&2; exit 1; }

    echo "asan: $ngx/objs/nginx and ngx_http_helix_module.so built" >&2
}

build

if [ "${1:-}" = "build" ]; then
    exit 0
fi

mkdir -p "$asan/logs"
rm -f "$asan"/logs/asan.*

export TEST_NGINX_BINARY=$asan/nginx/objs/nginx
export TEST_NGINX_LOAD_MODULES=$asan/nginx/objs/ngx_http_helix_module.so
export TEST_NGINX_ASAN_LOGS=$asan/logs
# detect_odr_violation=0: nginx and every dynamic module each define
# ngx_modules and ngx_module_names, by design
export ASAN_OPTIONS="detect_leaks=0:detect_odr_violation=0:log_path=$asan/logs/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

if [ $# -eq 0 ]; then
    set -- -r t/
fi

rc=0
"$top/util/test.sh" "$@" || rc=$?

if ls "$asan"/logs/asan.* >/dev/null 2>&1; then
    echo "asan: AddressSanitizer reports:" >&2
    for f in "$asan"/logs/asan.*; do
        echo "== $f" >&2
        head -60 "$f" >&2
    done
    rc=1
fi

exit $rc
