#!/usr/bin/env bash
# The demo gateway: "make run" (util/run.sh start) and "make stop".
#
# Starts Redis (6379) and PostgreSQL (5432), or reuses ones answering
# there, the mock providers on 127.0.0.1:8101 (openai), 8102 (claude,
# Anthropic-style) and 8103 (gemini), and nginx with the module on
# 127.0.0.1:8080, all in the background, with state under build/run/.
# OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY in the environment
# point that provider at the real API instead of its mock.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
run=$top/build/run
nginx=${NGINX:-/usr/sbin/nginx}
port=${HELIX_PORT:-8080}

provider() {   # name mock_port real_host key
    local name=$1 mport=$2 host=$3 key=${4:-}

    if [ -n "$key" ]; then
        cat >> "$run/conf/providers.conf" <<CONF
upstream helix_$name {
    server $host:443;
    keepalive 256;
}
CONF
        cat >> "$run/conf/provider_locations.conf" <<CONF
location /_helix/$name/ {
    internal;
    proxy_pass https://helix_$name/;
    proxy_ssl_server_name on;
    proxy_ssl_name $host;
    proxy_set_header Host $host;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_connect_timeout 5s;
    proxy_read_timeout 300s;
    proxy_buffering off;
}
CONF
        echo "  $name -> https://$host (real API)"
    else
        cat >> "$run/conf/providers.conf" <<CONF
upstream helix_$name {
    least_conn;
    server 127.0.0.1:$mport weight=5;
    keepalive 256;
}
CONF
        cat >> "$run/conf/provider_locations.conf" <<CONF
location /_helix/$name/ {
    internal;
    proxy_pass http://helix_$name/;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_connect_timeout 5s;
    proxy_read_timeout 300s;
    proxy_buffering off;
}
CONF
        echo "  $name -> mock on 127.0.0.1:$mport"
    fi
}

wait_http() {   # url what
    local i
    for i in $(seq 1 300); do
        if curl -sf -m 2 -o /dev/null "$1"; then
            return 0
        fi
        sleep 0.1
    done
    echo "run: $2 did not answer on $1" >&2
    return 1
}

start() {
    mkdir -p "$run/conf" "$run/logs" "$run/tmp" "$run/modules"
    ln -sf "$top/build/ngx_http_helix_module.so" "$run/modules/"
    ln -sf "$top/conf/nginx.conf" "$run/conf/nginx.conf"
    ln -sf "$top/conf/helix.yaml" "$run/conf/helix.yaml"

    if [ -z "${ADMIN_TOKEN:-}" ]; then
        if [ ! -s "$run/admin_token" ]; then
            od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$run/admin_token"
        fi
        ADMIN_TOKEN=$(cat "$run/admin_token")
    fi
    export ADMIN_TOKEN

    # the demo's unlimited key: never one written in a file of the repo
    if [ -z "${HELIX_BENCH_KEY:-}" ]; then
        if [ ! -s "$run/bench_key" ]; then
            (umask 077 && printf 'sk-helix-%s' \
                "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')" \
                > "$run/bench_key")
        fi
        HELIX_BENCH_KEY=$(cat "$run/bench_key")
    fi
    export HELIX_BENCH_KEY

    echo "services:"
    "$top/util/services.sh" start redis 6379 "$run/redis" | sed 's/^/  /'
    "$top/util/services.sh" start postgres 5432 "$run/postgres" \
        | sed 's/^/  /'
    PGPORT=5432 "$top/util/migrate.sh" | sed 's/^/  /'

    if ! curl -sf -o /dev/null http://127.0.0.1:8101/_mock/health; then
        nohup "$top/util/mock_provider" --openai 8101 --anthropic 8102 \
            --gemini 8103 --pidfile "$run/mock.pid" \
            > "$run/logs/mock.log" 2>&1 &
    fi
    wait_http http://127.0.0.1:8101/_mock/health "the mock provider"
    echo "  mock providers on 127.0.0.1:8101 (openai), 8102 (anthropic)," \
         "8103 (gemini)"

    echo "providers:"
    : > "$run/conf/providers.conf"
    : > "$run/conf/provider_locations.conf"
    provider openai 8101 api.openai.com "${OPENAI_API_KEY:-}"
    provider claude 8102 api.anthropic.com "${ANTHROPIC_API_KEY:-}"
    provider gemini 8103 generativelanguage.googleapis.com \
        "${GEMINI_API_KEY:-}"

    "$nginx" -p "$run/" -c conf/nginx.conf -t -q

    if [ -s "$run/logs/nginx.pid" ] \
       && kill -0 "$(cat "$run/logs/nginx.pid")" 2>/dev/null
    then
        # a new build of the module needs a new master, not a reload
        kill -QUIT "$(cat "$run/logs/nginx.pid")"
        for _ in $(seq 1 100); do
            [ -s "$run/logs/nginx.pid" ] || break
            sleep 0.1
        done
        "$nginx" -p "$run/" -c conf/nginx.conf
        echo "nginx: restarted"
    else
        "$nginx" -p "$run/" -c conf/nginx.conf
    fi
    wait_http "http://127.0.0.1:$port/health" "nginx"

    cat <<MSG
gateway: http://127.0.0.1:$port  (nginx -p $run/, logs in $run/logs)
  curl http://127.0.0.1:$port/health
  curl http://127.0.0.1:$port/v1/models
admin token: $ADMIN_TOKEN
bench key (unlimited): $HELIX_BENCH_KEY
stop everything with: make stop
MSG
}

stop() {
    # a signal by pid: "nginx -s" would need helix.yaml's environment
    if [ -s "$run/logs/nginx.pid" ]; then
        kill -QUIT "$(cat "$run/logs/nginx.pid")" 2>/dev/null || true
        for _ in $(seq 1 100); do
            [ -s "$run/logs/nginx.pid" ] || break
            sleep 0.1
        done
        echo "nginx stopped"
    fi
    if [ -s "$run/mock.pid" ]; then
        kill "$(cat "$run/mock.pid")" 2>/dev/null || true
        rm -f "$run/mock.pid"
        echo "mock providers stopped"
    fi
    "$top/util/services.sh" stop redis "$run/redis" || true
    "$top/util/services.sh" stop postgres "$run/postgres" || true
}

case "${1:-}" in
start) start ;;
stop)  stop ;;
*)     echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
