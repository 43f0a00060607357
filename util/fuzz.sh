#!/usr/bin/env bash
# "make fuzz": the libFuzzer harnesses of util/fuzz/ (one .c a target),
# each run for FUZZ_SECONDS (default 60) from its committed seed corpus
# util/fuzz/corpus/<target>/.  nginx 1.22.1 (Debian's source package,
# util/nginx-src.sh) and the module are built once with clang,
# -fsanitize=fuzzer-no-link,address in build/fuzz/nginx; each harness is
# linked with all of it (nginx's main renamed away), leaving out the
# module objects whose .c it includes for their static functions.
#
# Usage: util/fuzz.sh [target...]      build and run (all targets)
#        util/fuzz.sh build            build only
#
# New inputs found go to build/fuzz/corpus/<target>/ (not the repository);
# a crash stops that target, its input is saved as
# build/fuzz/crashes/<target>-crash-<sha1> and shown, and the run fails.
# Commit such an input into util/fuzz/corpus/<target>/ once fixed: every
# run replays the corpus first.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
fz=$top/build/fuzz
ngx=$fz/nginx
seconds=${FUZZ_SECONDS:-60}

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo -E)
fi

# clang and its libFuzzer/ASan runtimes (Debian 12: clang 14)
deps() {
    local missing=() pkg

    for pkg in clang libclang-rt-dev; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null \
            | grep -q "install ok installed"
        then
            missing+=("$pkg")
        fi
    done

    if ((${#missing[@]})); then
        echo "fuzz: installing ${missing[*]}" >&2
        "${SUDO[@]}" apt-get update -q >&2
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    fi
}

CFLAGS="-g -O1 -fno-omit-frame-pointer -gline-tables-only"

build_nginx() {
    local src

    src=$("$top/util/nginx-src.sh")

    if [ ! -f "$ngx/debian/changelog" ]; then
        rm -rf "$ngx"
        mkdir -p "$fz"
        cp -a "$src" "$ngx"
    fi

    if [ ! -f "$ngx/objs/Makefile" ] || [ "$top/config" -nt "$ngx/objs/Makefile" ]
    then
        ( cd "$ngx" && ./configure --with-cc=clang \
              --with-cc-opt="$CFLAGS -fsanitize=fuzzer-no-link,address -Wno-error" \
              --with-ld-opt="-fsanitize=fuzzer-no-link,address" \
              --with-compat --with-threads \
              --add-module="$top" ) > "$fz/configure.log" 2>&1 || {
            tail -20 "$fz/configure.log" >&2
            exit 1
        }
    fi

    make -C "$ngx" -f objs/Makefile -j"$(nproc)" binary \
        > "$fz/make.log" 2>&1 || { tail -40 "$fz/make.log" >&2; exit 1; }

    # everything but main(): libFuzzer has its own
    objcopy --redefine-sym main=ngx_fuzz_nginx_main \
        "$ngx/objs/src/core/nginx.o" "$fz/nginx-nomain.o"
}

build_target() {
    local t=$1 h=$top/util/fuzz/$1.c inc objs libs

    # the module's .c files the harness includes: their objects stay out
    inc=$(sed -n 's|^#include "\.\./\.\./src/[a-z]*/\(ngx_http_helix_[a-z_0-9]*\)\.c"|\1.o|p' "$h" \
          | tr '\n' ' ')

    # (objs/addon/src/: a tree built before src/ had its layers)
    objs=$(find "$ngx/objs" -name '*.o' ! -path '*/src/core/nginx.o' \
           ! -path '*/objs/addon/src/*' \
           | while read -r o; do
                 case " $inc " in *" $(basename "$o") "*) continue;; esac
                 echo "$o"
             done)

    libs=$(grep -oE -- '(^|[[:space:]])-l[a-z0-9_+-]+' "$ngx/objs/Makefile" \
           | sort -u)

    # shellcheck disable=SC2086
    clang $CFLAGS -fsanitize=fuzzer,address \
        -I "$ngx/src/core" -I "$ngx/src/event" -I "$ngx/src/event/modules" \
        -I "$ngx/src/os/unix" -I "$ngx/objs" -I "$ngx/src/http" \
        -I "$ngx/src/http/modules" \
        -I "$top/src/core" -I "$top/src/clients" -I "$top/src/formats" \
        -I "$top/src/policy" -I "$top/src/api" \
        -I "$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" \
        -o "$fz/bin/$t" "$h" "$fz/nginx-nomain.o" $objs $libs -lm \
        2> "$fz/bin/$t.log" || { cat "$fz/bin/$t.log" >&2; exit 1; }
}

targets=()
for h in "$top"/util/fuzz/*.c; do
    targets+=("$(basename "$h" .c)")
done

deps
build_nginx
mkdir -p "$fz/bin" "$fz/crashes"

for t in "${targets[@]}"; do
    build_target "$t"
done

echo "fuzz: ${#targets[@]} targets built in $fz/bin" >&2

if [ "${1:-}" = "build" ]; then
    exit 0
fi

if [ $# -gt 0 ]; then
    targets=("$@")
fi

# the longest input worth trying, per target
max_len() {
    case $1 in
    l2|redis)   echo 4096 ;;
    *)          echo 16384 ;;
    esac
}

failed=()
summary=()

for t in "${targets[@]}"; do
    seeds=$top/util/fuzz/corpus/$t
    work=$fz/corpus/$t
    log=$fz/$t.log
    mkdir -p "$work" "$seeds"

    echo "fuzz: $t for ${seconds}s" >&2

    rc=0
    ( cd "$fz" && ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
          "$fz/bin/$t" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
          -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
          -artifact_prefix="$fz/crashes/$t-" "$work" "$seeds" ) \
        > "$log" 2>&1 || rc=$?

    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    summary+=("$(printf '%-10s %12s execs  cov %6s  ft %6s  %s' "$t" \
                 "${runs:-?}" "${cov:-?}" "${ft:-?}" \
                 "$([ $rc -eq 0 ] && echo ok || echo FAILED)")")

    if [ $rc -ne 0 ]; then
        failed+=("$t")
        grep -A40 -E '^==[0-9]+==|ERROR: libFuzzer|SUMMARY' "$log" | head -80 >&2
        for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
            echo "fuzz: $t: the input ($a), base64:" >&2
            base64 "$a" | head -40 >&2
        done
    fi
done

echo "fuzz: ${seconds}s a target (log: $fz/<target>.log)"
printf '  %s\n' "${summary[@]}"

if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
fi
