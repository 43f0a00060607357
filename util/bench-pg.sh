#!/usr/bin/env bash
# PostgreSQL costs, same run: L1-hit throughput with and without the
# completion log (wrk, alternating), and background tasks claimed and
# completed per second by one and by two nginx instances.
#
#   BENCH_SECONDS (3), BENCH_ROUNDS (5), BENCH_CONNECTIONS (50),
#   BENCH_TASKS (2000)
#   BENCH_PORT (18490: nginx, +1 second nginx, +2 mock, +3 stand-in
#   provider), BENCH_PG_PORT (16490)
#
# The provider is a stand-in (an nginx answering the mock's recorded
# answer to any request): the Python mock would be the bottleneck of the
# tasks' figures, not the gateway and PostgreSQL.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/bench-pg
nginx=${NGINX:-/usr/sbin/nginx}
secs=${BENCH_SECONDS:-3}
rounds=${BENCH_ROUNDS:-5}
conns=${BENCH_CONNECTIONS:-50}
ntasks=${BENCH_TASKS:-2000}
port=${BENCH_PORT:-18490}
mock=$((port + 2))
standin=$((port + 3))
pg=${BENCH_PG_PORT:-16490}

body='{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there, benchmark"}],"max_tokens":50}'

mock_pid=
cleanup() {
    for n in a b; do
        [ -s "$dir/$n/logs/nginx.pid" ] \
            && kill -QUIT "$(cat "$dir/$n/logs/nginx.pid")" 2>/dev/null || true
    done
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    [ -s "$dir/standin/standin.pid" ] \
        && kill -QUIT "$(cat "$dir/standin/standin.pid")" 2>/dev/null || true
    "$top/util/services.sh" stop postgres "$dir/postgres" >/dev/null 2>&1 || true
}
trap cleanup EXIT

rm -rf "$dir/a" "$dir/b"
mkdir -p "$dir"

"$top/util/services.sh" start postgres "$pg" "$dir/postgres" >/dev/null
PGPORT=$pg "$top/util/migrate.sh" --reset >/dev/null
"$top/util/mock_provider" --openai "$mock" > "$dir/mock.log" 2>&1 &
mock_pid=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$mock/_mock/health" && break
    sleep 0.1
done

recorded=$(curl -sf "http://127.0.0.1:$mock/v1/chat/completions" \
               -H 'Content-Type: application/json' -d "$body")
mkdir -p "$dir/standin"
cat > "$dir/standin/standin.conf" <<CONF
worker_processes 1;
error_log $dir/standin/error.log warn;
pid $dir/standin/standin.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/standin;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$standin;
        location / { default_type application/json; return 200 '$recorded'; }
    }
}
CONF
"$nginx" -p "$dir/standin" -c "$dir/standin/standin.conf"

cat > "$dir/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
LUA

start() {   # $1: a|b, $2: port, $3: database block or ""
    local d=$dir/$1
    mkdir -p "$d/conf" "$d/logs" "$d/tmp"
    [ -s "$d/logs/nginx.pid" ] && kill -QUIT "$(cat "$d/logs/nginx.pid")" \
        && while [ -e "$d/logs/nginx.pid" ]; do sleep 0.1; done
    cat > "$d/conf/helix.yaml" <<YAML
providers:
  openai:
    type: openai
    api_key: bench
    models: [gpt-4o]
$3
YAML
    cat > "$d/conf/nginx.conf" <<CONF
load_module $top/build/ngx_http_helix_module.so;
worker_processes ${WORKERS:-2};
pid $d/logs/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp;
    helix_config $d/conf/helix.yaml;
    helix_loopback 127.0.0.1:$2;
    upstream helix_openai { server 127.0.0.1:$standin; keepalive 256; }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location /_helix/openai/ {
            internal;
            proxy_pass http://helix_openai/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /v1/chat/completions { helix_endpoint chat_completions; }
        location /v1/tasks { helix_endpoint tasks; }
    }
}
CONF
    if [ -n "${PIN:-}" ]; then
        taskset -c "$PIN" "$nginx" -p "$d" -c "$d/conf/nginx.conf"
    else
        "$nginx" -p "$d" -c "$d/conf/nginx.conf"
    fi
    for _ in $(seq 1 100); do
        curl -s -o /dev/null -X POST -d "$body" \
            "http://127.0.0.1:$2/v1/chat/completions" && break
        sleep 0.05
    done
}

ticks() {   # CPU time of a process tree's children (nginx workers)
    local t=0 pid
    for pid in $(pgrep -P "$1"); do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    echo "$t"
}

# "req/s worker-us/req": throughput, and the workers' CPU per request
# (steadier than throughput on a shared machine)
rps() {
    local master t0 t1 out
    master=$(cat "$dir/a/logs/nginx.pid")
    t0=$(ticks "$master")
    out=$(${PIN:+taskset -c $PIN} wrk -t "${WRK_THREADS:-2}" -c "$conns" \
          -d "${secs}s" -s "$dir/post.lua" \
          "http://127.0.0.1:$port/v1/chat/completions")
    t1=$(ticks "$master")
    echo "$out" | awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
        / requests in / { n = $1 }
        /Requests\/sec/ { r = $2 }
        END { printf "%.0f %.2f", r, t / hz * 1e6 / n }'
}

db="database:
  host: 127.0.0.1
  port: $pg
  completion_log:
    buffer: 512m
tasks:"

# PostgreSQL's processes on CPU $1 (new backends inherit the
# postmaster's mask), or on every CPU with no argument
pg_cpus() {
    local data pid
    data=$(cat "$dir/postgres/pgdata.path" 2>/dev/null || echo "$dir/postgres/data")
    pid=$(head -1 "$data/postmaster.pid")
    for p in $pid $(pgrep -P "$pid"); do
        taskset -a -p -c "${1:-0-$(($(nproc) - 1))}" "$p" >/dev/null
    done
}

# "shared": nginx, wrk and PostgreSQL share every CPU, as in "make run";
# "pg apart": PostgreSQL alone on the last CPU, nginx (one worker) and
# wrk (a thread per CPU) on the others, as with the database on its own
# host: the cost left is the gateway's own (building rows, sending them)
cpus=$(nproc)
last=$((cpus - 1))
rest=0-$((last - 1))
[ "$last" = 1 ] && rest=0
ncpu_rest=$last     # a wrk thread per CPU left to nginx and wrk

echo "L1 hit, $rounds rounds of ${secs}s per case, alternating:"
for round in $(seq 1 "$rounds"); do
    pg_cpus
    WORKERS=2 start a "$port" ""
    off[$round]=$(rps)
    WORKERS=2 start a "$port" "$db
  enabled: false"
    on[$round]=$(rps)

    pg_cpus "$last"
    WORKERS=1 PIN=$rest start a "$port" ""
    aoff[$round]=$(PIN=$rest WRK_THREADS=$ncpu_rest rps)
    WORKERS=1 PIN=$rest start a "$port" "$db
  enabled: false"
    aon[$round]=$(PIN=$rest WRK_THREADS=$ncpu_rest rps)
    echo "  round $round: shared: no log ${off[$round]}, log ${on[$round]};" \
         "pg apart: no log ${aoff[$round]}, log ${aon[$round]}" \
         "(req/s, worker us/req)"
done
pg_cpus
rows=$(psql -X -tA -h 127.0.0.1 -p "$pg" -U postgres -d helixagent \
       -c "SELECT count(*) FROM completions")
lost=$(grep -c "completion log buffer full" "$dir/a/logs/error.log" || true)
# ratios within a round (same load on the box), then their median
for round in $(seq 1 "$rounds"); do
    echo "${on[$round]} ${off[$round]} ${aon[$round]} ${aoff[$round]}"
done | awk -v r="$rows" -v lost="$lost" '
    { a[NR] = $1 / $3; c[NR] = $2 / $4; b[NR] = $5 / $7; d[NR] = $6 / $8 }
    function median(x, n,    i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
            if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
        return n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
    }
    END { printf "  medians, log/no log, shared: throughput %.3f, worker " \
                 "CPU per request %.3f\n", median(a, NR), median(c, NR)
          printf "  medians, log/no log, pg apart: throughput %.3f, " \
                 "worker CPU per request %.3f\n", median(b, NR), median(d, NR)
          printf "  %d rows written; buffer-full reports in the last " \
                 "run: %d\n", r, lost }'

tasks() {   # $1: number of nginx instances
    psql -X -q -h 127.0.0.1 -p "$pg" -U postgres -d helixagent \
        -c "DELETE FROM background_tasks" >/dev/null
    # pending before any runner starts: the rate is claim + run + store
    psql -X -q -h 127.0.0.1 -p "$pg" -U postgres -d helixagent -c \
        "INSERT INTO background_tasks (type, payload) SELECT 'completion',
         json_build_object('messages', json_build_array(json_build_object(
         'role', 'user', 'content', 'task ' || i)), 'model', 'gpt-4o')
         FROM generate_series(1, $ntasks) i" >/dev/null
    local t0 t1
    t0=$(date +%s.%N)
    start a "$port" "$db
  enabled: true
  concurrency: 16
  poll_interval: 200ms"
    [ "$1" = 1 ] || start b "$((port + 1))" "$db
  enabled: true
  concurrency: 16
  poll_interval: 200ms"
    until [ "$(psql -X -tA -h 127.0.0.1 -p "$pg" -U postgres -d helixagent \
              -c "SELECT count(*) FROM background_tasks
                  WHERE status = 'completed'")" = "$ntasks" ]
    do
        sleep 0.05
    done
    t1=$(date +%s.%N)
    awk -v n="$ntasks" -v a="$t0" -v b="$t1" -v i="$1" \
        'BEGIN { printf "  %d nginx: %d tasks in %.2fs = %.0f tasks/s\n",
                 i, n, b - a, n / (b - a) }'
    for n in a b; do
        [ -s "$dir/$n/logs/nginx.pid" ] \
            && kill -QUIT "$(cat "$dir/$n/logs/nginx.pid")" \
            && while [ -e "$dir/$n/logs/nginx.pid" ]; do sleep 0.1; done
    done
    return 0
}

echo "background tasks (distinct prompts: every one a provider call):"
tasks 1
tasks 2
