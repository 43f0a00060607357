#!/usr/bin/env bash
# "make bench": helix side by side with plain nginx, in one run, on one
# machine, everything on 127.0.0.1, started and stopped here.
#
# The helix cases run through the demo configuration as "make run" gives
# it (conf/nginx.conf + conf/helix.yaml: auth, limits, metrics, access log,
# L2 in Redis, the completion log in PostgreSQL when configured), with the
# HELIX_BENCH_KEY key.  The plain nginx cases run in the same server, so
# both pay for the same access log and the same workers.
#
#   ceiling      nginx "return 200" of the same JSON answer
#   proxy_floor  nginx proxy_pass (keepalive upstream) to the stand-in
#   helix_l1     chat completion answered from shared memory (L1)
#   helix_l2     the same with L1 off: answered from Redis (L2)
#   helix_miss   cache off: the provider subrequest to the stand-in
#   stream       time to first byte and total time of a streamed chat
#                completion, helix vs proxy_pass, against the mock
#   l1_<N>       L1 hits spread over N cached entries (1k, 10k, 100k)
#
# The stand-in provider is a second nginx (one worker) answering the mock
# provider's own recorded answer; its line in the table ("standin", hit
# directly) shows it is several times faster than the proxy floor, so the
# floor and the miss measure nginx and helix, not the stand-in.  (The
# Python mock tops out near the floor itself; it serves the stream case,
# where one request at a time is timed.)
#
# For each case: requests/s, p50/p99, CPU per request (utime+stime of the
# workers over the requests), and the workers' RSS before and after.
# Output: a table on stdout and build/bench/results.json.
#
#   BENCH_SECONDS (5), BENCH_CONNECTIONS (50), BENCH_THREADS (2),
#   HELIX_BENCH_KEY (default: a random one), SOAK=1 (about a million L1
#   hits and a hundred thousand misses, worker RSS at the start and the end),
#   BENCH_LOG=1 (the demo's completion log on: every completion written
#   to PostgreSQL on these same cores, which then costs about a third of
#   the throughput; off by default, its own bench is util/bench-pg.sh).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/bench
nginx=${NGINX:-/usr/sbin/nginx}
secs=${BENCH_SECONDS:-5}
conns=${BENCH_CONNECTIONS:-50}
threads=${BENCH_THREADS:-2}
# no key known outside this run (32+ characters, as nginx -t wants)
key=${HELIX_BENCH_KEY:-sk-bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')}
admin=admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
log=${BENCH_LOG:-0}  # 1: the demo's completion log on, PostgreSQL here
port=18480
mock=18481          # 18481-18483: openai, anthropic, gemini
standin=18485
redis=16390
pg=15490

body='{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there, benchmark"}],"max_tokens":50}'
sbody='{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there, benchmark"}],"max_tokens":50,"stream":true}'

mock_pid=
cleanup() {
    for p in nginx standin; do
        [ -s "$dir/logs/$p.pid" ] \
            && kill -QUIT "$(cat "$dir/logs/$p.pid")" 2>/dev/null || true
    done
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    "$top/util/services.sh" stop redis "$dir/redis" >/dev/null 2>&1 || true
    "$top/util/services.sh" stop postgres "$dir/postgres" >/dev/null 2>&1 \
        || true
}
trap cleanup EXIT

command -v wrk >/dev/null || {
    echo "bench: installing wrk" >&2
    apt-get install -y -qq wrk >/dev/null
}

rm -rf "$dir"
mkdir -p "$dir/conf" "$dir/logs" "$dir/tmp" "$dir/modules"
ln -sf "$top/build/ngx_http_helix_module.so" "$dir/modules/"

"$top/util/services.sh" start redis "$redis" "$dir/redis" >/dev/null
"$top/util/services.sh" start postgres "$pg" "$dir/postgres" >/dev/null
# the demo's completion log and tasks need their tables
PGPORT=$pg "$top/util/migrate.sh" >/dev/null
"$top/util/mock_provider" --openai "$mock" --anthropic $((mock + 1)) \
    --gemini $((mock + 2)) > "$dir/logs/mock.log" 2>&1 &
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

lua() {   # file body
    cat > "$1" <<LUA
wrk.method = "POST"
wrk.body = '$2'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
}
lua "$dir/post.lua" "$body"

# N distinct requests, taken at random: an L1 of N entries
spread() {   # file N
    cat > "$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
local n = $2
request = function()
    local i = math.random(n)
    return wrk.format(nil, nil, nil,
        '{"model":"gpt-4o","messages":[{"role":"user","content":"entry ' .. i .. '"}],"max_tokens":50}')
end
LUA
}

# N distinct requests in order, once each: fills L1 with N entries
fill() {   # N
    cat > "$dir/fill.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
-- wrk asks for one request before sending any: entry 0, never sent
local n, i = $1, -1
request = function()
    i = i + 1
    if i > n then i = n end
    return wrk.format(nil, nil, nil,
        '{"model":"gpt-4o","messages":[{"role":"user","content":"entry ' .. i .. '"}],"max_tokens":50}')
end
LUA
    # one thread and connection: every entry is asked for once
    wrk -t1 -c1 -d120s -s "$dir/fill.lua" "http://127.0.0.1:$port/v1/chat/completions" \
        > /dev/null 2>&1 &
    local w=$! n
    for _ in $(seq 1 1200); do
        n=$(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/health" \
            | sed -n 's/.*"entries":\([0-9]*\).*/\1/p')
        [ "${n:-0}" -ge "$1" ] && break
        sleep 0.1
    done
    kill "$w" 2>/dev/null || true
    wait "$w" 2>/dev/null || true
}

# the demo configuration, pointed at the bench's own services
config() {   # l1 (on|off) [max entries]
    sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$port/" \
        -e 's|include  provider_locations.conf;|include  provider_locations.conf;\n        include  bench_locations.conf;|' \
        "$top/conf/nginx.conf" > "$dir/conf/nginx.conf"
    cp "$top/conf/helix.yaml" "$dir/conf/helix.yaml"
    if [ "$1" = off ]; then
        # the first "enabled: true" under l1 turns L1 off
        sed -i '/^  l1:/,/^  l2:/ s/enabled: true/enabled: false/' \
            "$dir/conf/helix.yaml"
    fi
    if [ -n "${2:-}" ]; then
        # room for the entries: about 1 kB each
        sed -i "s/helix_cache_zone  64m;/helix_cache_zone  $(( $2 / 400 + 64 ))m;/" \
            "$dir/conf/nginx.conf"
        sed -i -e '/^  l1:/,/^  l2:/ s/max_size: .*/max_size: '"$2"'/' \
               -e '/^    completions:/,/^    embeddings:/ s/max_size: .*/max_size: '"$2"'/' \
            "$dir/conf/helix.yaml"
    fi
    # the bench runs without warming: it would call the other providers
    sed -i '/^  warming:/,/^redis:/ s/enabled: true/enabled: false/' \
        "$dir/conf/helix.yaml"
    if [ "$log" = 0 ]; then
        # PostgreSQL on these same cores would take what it spends per row
        # from nginx: the log's cost is util/bench-pg.sh's to measure
        sed -i 's/^  password: \${DB_PASSWORD:-}$/&\n  completion_log:\n    enabled: false/' \
            "$dir/conf/helix.yaml"
    fi

    cat > "$dir/conf/providers.conf" <<CONF
upstream helix_openai { server 127.0.0.1:$standin; keepalive 256; }
upstream helix_claude { server 127.0.0.1:$((mock + 1)); keepalive 32; }
upstream helix_gemini { server 127.0.0.1:$((mock + 2)); keepalive 32; }
upstream bench_mock { server 127.0.0.1:$mock; keepalive 32; }
CONF
    cat > "$dir/conf/provider_locations.conf" <<CONF
location /_helix/openai/ {
    internal;
    proxy_pass http://helix_openai/;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
}
location /_helix/claude/ {
    internal;
    proxy_pass http://helix_claude/;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
}
location /_helix/gemini/ {
    internal;
    proxy_pass http://helix_gemini/;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
}
CONF
    cat > "$dir/conf/bench_locations.conf" <<CONF
location = /bench/ceiling { default_type application/json; return 200 '$recorded'; }
location = /bench/proxy {
    proxy_pass http://helix_openai/v1/chat/completions;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
}
location = /bench/proxy-stream {
    proxy_pass http://bench_mock/v1/chat/completions;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
}
location = /bench/miss { helix_endpoint chat_completions; helix_cache_policy off; }
CONF
}

start() {
    if [ -s "$dir/logs/nginx.pid" ]; then
        kill -QUIT "$(cat "$dir/logs/nginx.pid")"
        for _ in $(seq 1 100); do
            [ -s "$dir/logs/nginx.pid" ] || break
            sleep 0.1
        done
    fi
    ADMIN_TOKEN=$admin REDIS_PORT=$redis DB_PORT=$pg \
    HELIX_BENCH_KEY=$key "$nginx" -p "$dir/" -c conf/nginx.conf
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/health" && return 0
        sleep 0.1
    done
    echo "bench: nginx did not start" >&2
    tail "$dir/logs/error.log" >&2
    exit 1
}

# the bench request once, so that it is cached (L1, or L2 with L1 off)
prime() {
    curl -s -o /dev/null -H "Authorization: Bearer $key" \
        "http://127.0.0.1:$port/v1/chat/completions" -d "$body"
}

workers() {
    local m
    m=$(cat "$dir/logs/nginx.pid")
    pgrep -P "$m" -f "worker process" || true
}

cpu_ticks() {   # utime + stime of the workers, in clock ticks
    local t=0 p f
    for p in $(workers); do
        f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
        t=$((t + ${f% *} + ${f#* }))
    done
    echo "$t"
}

rss_kb() {
    local t=0 p v
    for p in $(workers); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

hz=$(getconf CLK_TCK)
results=()
run() {   # name url script [seconds]
    local out rps p50 p99 n c0 c1 r0 r1 url=$2 s=${4:-$secs} cpu
    [ "${url#/}" != "$url" ] && url="http://127.0.0.1:$port$url"
    r0=$(rss_kb); c0=$(cpu_ticks)
    out=$(wrk -t"$threads" -c"$conns" -d"${s}s" --latency -s "$3" "$url" 2>&1)
    c1=$(cpu_ticks); r1=$(rss_kb)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    if echo "$out" | grep -q "Non-2xx"; then
        echo "bench: $1 had non-2xx answers:" \
             "$(echo "$out" | grep Non-2xx)" >&2
    fi
    if [ "$1" = standin ]; then
        cpu=-
    else
        cpu=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="${n:-0}" \
              'BEGIN { printf "%.1f", n ? t / hz / n * 1e6 : 0 }')
    fi
    results+=("$1 ${rps:-0} ${p50:--} ${p99:--} $cpu $r0 $r1 ${n:-0}")
    printf '%-12s %11s req/s  p50 %-9s p99 %-9s cpu %6s us/req  rss %6s -> %6s kB\n' \
        "$1" "$rps" "$p50" "$p99" "$cpu" "$r0" "$r1"
}

# time to first byte and total, one request at a time
ttfb() {   # name path
    local i f
    f="$dir/ttfb-$1"
    : > "$f"
    for i in $(seq 1 300); do
        curl -s -o /dev/null -H 'Content-Type: application/json' \
            -H "Authorization: Bearer $key" -d "$sbody" \
            -w '%{time_starttransfer} %{time_total} %{http_code}\n' \
            "http://127.0.0.1:$port$2" >> "$f"
    done
    if grep -qv ' 200$' "$f"; then
        echo "bench: $1: not every stream answered 200" \
             "($(grep -v ' 200$' "$f" | head -1))" >&2
    fi
    local a b n
    n=$(wc -l < "$f")
    a=$(awk '{ print $1 * 1000 }' "$f" | sort -n)
    b=$(awk '{ print $2 * 1000 }' "$f" | sort -n)
    echo "$1 $(echo "$a" | sed -n "$((n / 2))p") $(echo "$a" | sed -n "$((n * 99 / 100))p")" \
         "$(echo "$b" | sed -n "$((n / 2))p") $(echo "$b" | sed -n "$((n * 99 / 100))p")"
}

echo "wrk -t$threads -c$conns -d${secs}s; nginx: 2 workers, demo configuration;" \
     "stand-in provider: 1 nginx worker"

# phase 1: the demo configuration, L1 on
config on
start
prime
lua "$dir/standin.lua" "$body"
run standin "http://127.0.0.1:$standin/v1/chat/completions" "$dir/standin.lua"
run ceiling /bench/ceiling "$dir/post.lua"
run proxy_floor /bench/proxy "$dir/post.lua"
run helix_l1 /v1/chat/completions "$dir/post.lua"
run helix_miss /bench/miss "$dir/post.lua"

# phase 2: L1 off, every hit comes from Redis
config off
start
prime
run helix_l2 /v1/chat/completions "$dir/post.lua"

# phase 3: L1 hits over 1k, 10k and 100k entries
for n in 1000 10000 100000; do
    config on $((n * 2))
    start
    echo "[$(date +%T)] filling L1 with $n entries" >&2
    fill "$n"
    echo "[$(date +%T)] filled" >&2
    spread "$dir/spread.lua" "$n"
    run "l1_$n" /v1/chat/completions "$dir/spread.lua"
done

# phase 4: streams, helix vs proxy_pass, through the mock
config on
sed -i "s/server 127.0.0.1:$standin; keepalive 256;/server 127.0.0.1:$mock; keepalive 256;/" \
    "$dir/conf/providers.conf"
start
stream_helix=$(ttfb stream_helix /bench/miss)
stream_proxy=$(ttfb stream_proxy /bench/proxy-stream)

# soak: RSS over about a million L1 hits and a hundred thousand misses,
# measured from after a short warm-up
soak=
if [ "${SOAK:-0}" = 1 ]; then
    config on
    start
    prime
    # warm-up: connections, buffers and pools reach their working size
    wrk -t"$threads" -c"$conns" -d2s -s "$dir/post.lua" \
        "http://127.0.0.1:$port/v1/chat/completions" > /dev/null 2>&1
    wrk -t"$threads" -c"$conns" -d2s -s "$dir/post.lua" \
        "http://127.0.0.1:$port/bench/miss" > /dev/null 2>&1
    rs=$(rss_kb)
    hits=0
    while [ "$hits" -lt 1000000 ]; do
        n=$(wrk -t"$threads" -c"$conns" -d5s -s "$dir/post.lua" \
                "http://127.0.0.1:$port/v1/chat/completions" 2>&1 \
            | awk '/requests in/ {print $1}')
        hits=$((hits + ${n:-0}))
    done
    misses=0
    while [ "$misses" -lt 100000 ]; do
        n=$(wrk -t"$threads" -c"$conns" -d3s -s "$dir/post.lua" \
                "http://127.0.0.1:$port/bench/miss" 2>&1 \
            | awk '/requests in/ {print $1}')
        misses=$((misses + ${n:-0}))
    done
    re=$(rss_kb)
    soak="$hits $misses $rs $re"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
val() { local n=$1 f=$2 r; for r in "${results[@]}"; do set -- $r; [ "$1" = "$n" ] && { shift $((f - 1)); echo "$1"; return; }; done; }

c=$(val ceiling 2); p=$(val proxy_floor 2); l1=$(val helix_l1 2)
l2=$(val helix_l2 2); m=$(val helix_miss 2)

echo
set -- $stream_helix; sh50=$2; sh99=$3; sht=$4
set -- $stream_proxy; sp50=$2; sp99=$3; spt=$4
printf 'stream (300 one at a time, ms)   ttfb p50 %s p99 %s  total p50 %s   |  proxy_pass: ttfb p50 %s p99 %s  total p50 %s\n' \
    "$sh50" "$sh99" "$sht" "$sp50" "$sp99" "$spt"
echo
echo "L1 hit / ceiling       $(ratio "$l1" "$c")"
echo "L2 hit / proxy floor   $(ratio "$l2" "$p")"
echo "miss / proxy floor     $(ratio "$m" "$p")"
echo "L1 100k / L1 1k        $(ratio "$(val l1_100000 2)" "$(val l1_1000 2)")"
echo "stream ttfb added p50  $(awk -v a="$sh50" -v b="$sp50" 'BEGIN { printf "%.3f ms", a - b }')"
if [ "$log" = 1 ]; then
    # every completion went to PostgreSQL on these same cores: what became
    # of the rows (dropped ones would flatter the figures)
    echo "completion log: $(psql -X -tA -h 127.0.0.1 -p "$pg" -U postgres \
          -d helixagent -c 'SELECT count(*) FROM completions') rows written," \
         "$(grep -o '[0-9]* dropped in all' "$dir/logs/error.log" \
            | awk '{ n += $1 } END { print n + 0 }') dropped (buffer full)," \
         "$(grep -c 'rejected by PostgreSQL' "$dir/logs/error.log") rejected batches"
else
    echo "completion log: off (BENCH_LOG=1 to run it, with PostgreSQL on" \
         "these cores; its cost: util/bench-pg.sh)"
fi
if [ -n "$soak" ]; then
    set -- $soak
    echo "soak: $1 L1 hits + $2 misses, worker RSS $3 kB -> $4 kB" \
         "($(awk -v a="$3" -v b="$4" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }'))"
fi

{
    echo "{"
    echo "  \"seconds\": $secs, \"connections\": $conns, \"threads\": $threads,"
    echo "  \"cases\": {"
    for r in "${results[@]}"; do
        set -- $r
        echo "    \"$1\": {\"rps\": $2, \"p50\": \"$3\", \"p99\": \"$4\"," \
             "\"cpu_us_per_req\": \"$5\", \"rss_kb_before\": $6," \
             "\"rss_kb_after\": $7, \"requests\": $8},"
    done
    echo "    \"stream\": {\"helix_ttfb_ms_p50\": $sh50, \"helix_ttfb_ms_p99\": $sh99," \
         "\"helix_total_ms_p50\": $sht, \"proxy_ttfb_ms_p50\": $sp50," \
         "\"proxy_ttfb_ms_p99\": $sp99, \"proxy_total_ms_p50\": $spt}"
    echo "  },"
    if [ -n "$soak" ]; then
        set -- $soak
        echo "  \"soak\": {\"l1_hits\": $1, \"misses\": $2, \"rss_kb_start\": $3, \"rss_kb_end\": $4},"
    fi
    echo "  \"ratios\": {\"l1_hit_vs_ceiling\": $(ratio "$l1" "$c"),"\
         "\"l2_hit_vs_proxy\": $(ratio "$l2" "$p"),"\
         "\"miss_vs_proxy\": $(ratio "$m" "$p"),"\
         "\"l1_100k_vs_1k\": $(ratio "$(val l1_100000 2)" "$(val l1_1000 2)")}"
    echo "}"
} > "$dir/results.json"
echo "results: $dir/results.json"
