#!/usr/bin/env bash
# "make bench": helix side by side with plain nginx, same run, same body,
# everything on 127.0.0.1, started and stopped here.  Cases: ceiling
# (nginx return 200 of the same answer), proxy floor (plain proxy_pass to
# the stand-in provider), helix L1 hit, helix L2 hit (L1 off), helix miss
# (cache off).  The stand-in provider is a second nginx answering the mock
# provider's own recorded answer: the Python mock tops out near the proxy
# floor itself, which would hide the gateway's cost; the "standin" line
# shows the stand-in alone is several times faster than the floor.
# Prints a table with ratios and writes build/bench/results.json.
#
#   BENCH_SECONDS (default 5), BENCH_CONNECTIONS (50), BENCH_THREADS (2)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/bench
nginx=${NGINX:-/usr/sbin/nginx}
secs=${BENCH_SECONDS:-5}
conns=${BENCH_CONNECTIONS:-50}
threads=${BENCH_THREADS:-2}
port=18480
mock=18481
standin=18482
redis=16390

body='{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there, benchmark"}],"max_tokens":50}'

mock_pid=
cleanup() {
    [ -s "$dir/logs/nginx.pid" ] && kill -QUIT "$(cat "$dir/logs/nginx.pid")" 2>/dev/null || true
    [ -s "$dir/logs/standin.pid" ] && kill -QUIT "$(cat "$dir/logs/standin.pid")" 2>/dev/null || true
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    "$top/util/services.sh" stop redis "$dir/redis" >/dev/null 2>&1 || true
}
trap cleanup EXIT

rm -rf "$dir"
mkdir -p "$dir/conf" "$dir/logs" "$dir/tmp"

"$top/util/services.sh" start redis "$redis" "$dir/redis" >/dev/null
"$top/util/mock_provider" --openai "$mock" > "$dir/logs/mock.log" 2>&1 &
mock_pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$mock/_mock/health" && break
    sleep 0.1
done

# the stand-in provider: the mock's answer to the bench request, recorded
recorded=$(curl -sf "http://127.0.0.1:$mock/v1/chat/completions" \
               -H 'Content-Type: application/json' -d "$body")
cat > "$dir/conf/standin.conf" <<CONF
worker_processes 1;
error_log logs/standin.log warn;
pid logs/standin.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$standin;
        location / { default_type application/json; return 200 '$recorded'; }
    }
}
CONF
"$nginx" -p "$dir/" -c conf/standin.conf

cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA

yaml() {   # $1: l1 max_size
    cat > "$dir/conf/helix.yaml" <<YAML
providers:
  openai:
    type: openai
    api_key: bench
    models: [gpt-4o]
cache:
  l1:
    max_size: $1
  l2:
    enabled: true
    host: 127.0.0.1:$redis
redis:
  pool:
    size: 4
    min_idle: 2
YAML
}

conf() {   # $1: the answer for the ceiling location
    cat > "$dir/conf/nginx.conf" <<CONF
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
    upstream helix_openai { server 127.0.0.1:$standin; keepalive 256; }
    server {
        listen 127.0.0.1:$port;
        location = /ceiling { default_type application/json; return 200 '$1'; }
        location = /proxy {
            proxy_pass http://helix_openai/v1/chat/completions;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /cached { helix_endpoint chat_completions; }
        location = /miss { helix_endpoint chat_completions; helix_cache_policy off; }
        location /_helix/openai/ {
            internal;
            proxy_pass http://helix_openai/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
}

start() {
    [ -s "$dir/logs/nginx.pid" ] && { kill -QUIT "$(cat "$dir/logs/nginx.pid")"; \
        for _ in $(seq 1 100); do [ -s "$dir/logs/nginx.pid" ] || break; sleep 0.1; done; }
    "$nginx" -p "$dir/" -c conf/nginx.conf
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/ceiling" && return 0
        sleep 0.1
    done
    echo "bench: nginx did not start" >&2; exit 1
}

results=()
run() {   # name path
    local out rps p50 p99
    local url=$2
    [ "${url#/}" != "$url" ] && url="http://127.0.0.1:$port$url"
    out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$dir/post.lua" \
              "$url" 2>&1)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    if echo "$out" | grep -q "Non-2xx"; then
        echo "bench: $1 had non-2xx answers" >&2
    fi
    results+=("$1 $rps $p50 $p99")
    printf '%-14s %12s req/s   p50 %-9s p99 %s\n' "$1" "$rps" "$p50" "$p99"
}

# phase 1: L1 on
yaml 100000
conf '{}'
start
answer=$(curl -s "http://127.0.0.1:$port/cached" -d "$body")
conf "$answer"
start
curl -s -o /dev/null "http://127.0.0.1:$port/cached" -d "$body"   # into L1

echo "wrk -t$threads -c$conns -d${secs}s, 2 nginx workers, stand-in provider: 1 nginx worker"
run standin "http://127.0.0.1:$standin/v1/chat/completions"
run ceiling /ceiling
run proxy_floor /proxy
run helix_l1_hit /cached
run helix_miss /miss

# phase 2: L1 holds nothing, every hit comes from Redis
yaml 0
start
curl -s -o /dev/null "http://127.0.0.1:$port/cached" -d "$body"
run helix_l2_hit /cached

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
get() { for r in "${results[@]}"; do set -- $r; [ "$1" = "$3" ] && echo "$2"; done; }
val() { local n=$1; for r in "${results[@]}"; do set -- $r; [ "$1" = "$n" ] && { echo "$2"; return; }; done; }

c=$(val ceiling); p=$(val proxy_floor); l1=$(val helix_l1_hit)
l2=$(val helix_l2_hit); m=$(val helix_miss)

echo
echo "L1 hit / ceiling     $(ratio "$l1" "$c")"
echo "L2 hit / proxy floor $(ratio "$l2" "$p")"
echo "miss / proxy floor   $(ratio "$m" "$p")"

{
    echo "{"
    echo "  \"seconds\": $secs, \"connections\": $conns, \"threads\": $threads,"
    echo "  \"cases\": {"
    i=0
    for r in "${results[@]}"; do
        set -- $r
        i=$((i + 1))
        sep=,; [ "$i" = "${#results[@]}" ] && sep=
        echo "    \"$1\": {\"rps\": $2, \"p50\": \"$3\", \"p99\": \"$4\"}$sep"
    done
    echo "  },"
    echo "  \"ratios\": {\"l1_hit_vs_ceiling\": $(ratio "$l1" "$c"),"\
         "\"l2_hit_vs_proxy\": $(ratio "$l2" "$p"),"\
         "\"miss_vs_proxy\": $(ratio "$m" "$p")}"
    echo "}"
} > "$dir/results.json"
echo "results: $dir/results.json"
