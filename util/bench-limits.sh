#!/usr/bin/env bash
# What API keys and rate limits cost on an L1 hit: two nginx side by side
# (2 workers each, same module), "plain" without auth or limits, "keyed"
# with auth on, and "anon" with per-address limits only; wrk alternates
# between the cases round after round, so that a busy machine slows them
# alike, and the medians are compared.  CPU per request is the workers'
# utime+stime over the requests wrk completed.
#
#   plain         L1 hits, no key, no limits
#   bench_key     L1 hits with a key marked unlimited (auth only)
#   limited       L1 hits with a limited key (shm buckets, x-ratelimit-*)
#   anon_limited  L1 hits, no key, per-address limits (the demo's way)
#
#   BENCH_SECONDS (4), BENCH_ROUNDS (7), BENCH_CONNECTIONS (50),
#   BENCH_THREADS (2), BENCH_LIMITS_PORT (18490; nginx on it and the next
#   two, the mock provider on +3)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/bench-limits
nginx=${NGINX:-/usr/sbin/nginx}
secs=${BENCH_SECONDS:-4}
rounds=${BENCH_ROUNDS:-7}
conns=${BENCH_CONNECTIONS:-50}
threads=${BENCH_THREADS:-2}
port=${BENCH_LIMITS_PORT:-18490}
mock=$((port + 3))
hz=$(getconf CLK_TCK)

body='{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there, benchmark"}],"max_tokens":50}'

mock_pid=
cleanup() {
    for d in plain keyed anon; do
        [ -s "$dir/$d/logs/nginx.pid" ] \
            && kill -QUIT "$(cat "$dir/$d/logs/nginx.pid")" 2>/dev/null || true
    done
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$dir"
mkdir -p "$dir"

"$top/util/mock_provider" --openai "$mock" > "$dir/mock.log" 2>&1 &
mock_pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$mock/_mock/health" && break
    sleep 0.1
done

# keys of this run only, 32+ characters as nginx -t wants
bench_key=sk-bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
limited_key=sk-limited-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')

for k in none bench limited; do
    case $k in
    bench)   v=$bench_key ;;
    limited) v=$limited_key ;;
    *)       v= ;;
    esac
    {
        echo 'wrk.method = "POST"'
        echo "wrk.body = '$body'"
        echo 'wrk.headers["Content-Type"] = "application/json"'
        [ -z "$v" ] \
            || echo "wrk.headers[\"Authorization\"] = \"Bearer $v\""
    } > "$dir/$k.lua"
done

instance() {   # name port helix.yaml-tail
    local d=$dir/$1
    mkdir -p "$d/conf" "$d/logs" "$d/tmp"
    {
        printf 'providers:\n  openai:\n    type: openai\n    api_key: x\n'
        printf '    models: [gpt-4o]\n%s\n' "$3"
    } > "$d/conf/helix.yaml"
    cat > "$d/conf/nginx.conf" <<CONF
load_module $top/build/ngx_http_helix_module.so;
worker_processes 2;
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    helix_config helix.yaml;
    helix_cache_zone 64m;
    upstream helix_openai { server 127.0.0.1:$mock; keepalive 64; }
    server {
        listen 127.0.0.1:$2;
        location = /cached { helix_endpoint chat_completions; }
        location /_helix/openai/ {
            internal;
            proxy_pass http://helix_openai/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
    "$nginx" -p "$d/" -c conf/nginx.conf
}

instance plain "$port" ''
instance keyed $((port + 1)) 'auth:
  enabled: true
  keys:
    - name: bench
      key: $bench_key
      unlimited: true
    - name: limited
      key: $limited_key
      requests_per_minute: 1000000000
      tokens_per_minute: 1000000000'
instance anon $((port + 2)) 'rate_limit:
  requests_per_minute: 1000000000
  tokens_per_minute: 1000000000'

for p in "$port" $((port + 1)) $((port + 2)); do
    for _ in $(seq 1 100); do
        curl -s -o /dev/null -H "Authorization: Bearer $bench_key" \
            "http://127.0.0.1:$p/cached" -d "$body" && break
        sleep 0.1
    done
done

cpu() {   # instance -> the workers' utime + stime, in ticks
    local t=0 p
    for p in $(pgrep -P "$(cat "$dir/$1/logs/nginx.pid")"); do
        set -- $(cut -d' ' -f14,15 "/proc/$p/stat")
        t=$((t + $1 + $2))
    done
    echo "$t"
}

results=()
run() {   # case instance port wrk-script
    local c0 c1 out req rps us
    c0=$(cpu "$2")
    out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" -s "$dir/$4.lua" \
              "http://127.0.0.1:$3/cached")
    c1=$(cpu "$2")
    if echo "$out" | grep -q "Non-2xx"; then
        echo "bench-limits: $1 had non-2xx answers" >&2
    fi
    req=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    us=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v r="$req" \
             'BEGIN { printf "%.2f", t / hz * 1e6 / r }')
    results+=("$1 $rps $us")
    printf '%-13s %10s req/s  %6s us CPU per request\n' "$1" "$rps" "$us"
}

echo "wrk -t$threads -c$conns -d${secs}s, $rounds rounds, 2 workers each"

cases=("plain plain $port none"
       "bench_key keyed $((port + 1)) bench"
       "limited keyed $((port + 1)) limited"
       "anon_limited anon $((port + 2)) none")

# each round starts with the next case: none is always first
for i in $(seq 0 $((rounds - 1))); do
    for j in 0 1 2 3; do
        run ${cases[$(((i + j) % 4))]}
    done
done

med() {   # case column -> the median
    local want=$1 col=$2 r
    for r in "${results[@]}"; do
        set -- $r
        if [ "$1" = "$want" ]; then echo "${!col}"; fi
    done | sort -n | awk '{ v[NR] = $1 }
        END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
printf '%-13s %10s %8s %12s %8s\n' median "req/s" ratio "us CPU/req" ratio
rps0=$(med plain 2)
us0=$(med plain 3)
for c in plain bench_key limited anon_limited; do
    rps=$(med "$c" 2)
    us=$(med "$c" 3)
    awk -v c="$c" -v r="$rps" -v r0="$rps0" -v u="$us" -v u0="$us0" \
        'BEGIN { printf "%-13s %10.0f %8.3f %12.2f %8.3f\n", c, r, r / r0, u, u / u0 }'
done
