#!/usr/bin/env bash
# The test suite ("make test"): starts a private Redis, PostgreSQL and the
# mock providers on test ports, runs prove with the given arguments, and
# stops what it started, whatever the outcome.
#
# Ports (override with the same variables): mock providers 18101 (openai),
# 18102 (anthropic), 18103 (gemini); Redis 16379; PostgreSQL 15432;
# nginx under test 1984.  TEST_NGINX_USE_VALGRIND=1 runs nginx under
# valgrind.  TEST_NGINX_LIB=/path/to/test-nginx/lib runs the suite under
# upstream Test::Nginx (openresty's test-nginx) instead of t/lib's runner:
# that lib/ comes first in @INC, t/lib still gives the Helix* helpers
# (t/lib/README).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
state=$top/build/test

export TEST_NGINX_BINARY=${TEST_NGINX_BINARY:-/usr/sbin/nginx}
export TEST_NGINX_LOAD_MODULES=${TEST_NGINX_LOAD_MODULES:-$top/build/ngx_http_helix_module.so}
export TEST_NGINX_SERVER_PORT=${TEST_NGINX_SERVER_PORT:-1984}
export TEST_NGINX_OPENAI_PORT=${TEST_NGINX_OPENAI_PORT:-18101}
export TEST_NGINX_ANTHROPIC_PORT=${TEST_NGINX_ANTHROPIC_PORT:-18102}
export TEST_NGINX_GEMINI_PORT=${TEST_NGINX_GEMINI_PORT:-18103}
export TEST_NGINX_REDIS_PORT=${TEST_NGINX_REDIS_PORT:-16379}
export TEST_NGINX_PG_PORT=${TEST_NGINX_PG_PORT:-15432}

mock_pid=

cleanup() {
    if [ -n "$mock_pid" ]; then
        kill "$mock_pid" 2>/dev/null || true
        wait "$mock_pid" 2>/dev/null || true
    fi
    "$top/util/services.sh" stop redis "$state/redis" >/dev/null || true
    "$top/util/services.sh" stop postgres "$state/postgres" >/dev/null || true
}
trap cleanup EXIT

mkdir -p "$state"

# the official SDKs for the SDK checks (t/049): once, never fatal
"$top/util/sdk-install.sh"

"$top/util/services.sh" start redis "$TEST_NGINX_REDIS_PORT" "$state/redis"
"$top/util/services.sh" start postgres "$TEST_NGINX_PG_PORT" \
    "$state/postgres"
PGPORT=$TEST_NGINX_PG_PORT "$top/util/migrate.sh" >/dev/null

"$top/util/mock_provider" --openai "$TEST_NGINX_OPENAI_PORT" \
    --anthropic "$TEST_NGINX_ANTHROPIC_PORT" \
    --gemini "$TEST_NGINX_GEMINI_PORT" > "$state/mock.log" 2>&1 &
mock_pid=$!

for _ in $(seq 1 300); do
    if curl -sf -o /dev/null \
        "http://127.0.0.1:$TEST_NGINX_OPENAI_PORT/_mock/health"
    then
        break
    fi
    if ! kill -0 "$mock_pid" 2>/dev/null; then
        cat "$state/mock.log" >&2
        echo "test: the mock provider did not start" >&2
        exit 1
    fi
    sleep 0.1
done

inc=(-I t/lib)
if [ -n "${TEST_NGINX_LIB:-}" ]; then
    if [ ! -f "$TEST_NGINX_LIB/Test/Nginx/Socket.pm" ]; then
        echo "test: no Test/Nginx/Socket.pm under TEST_NGINX_LIB=$TEST_NGINX_LIB" >&2
        exit 1
    fi
    inc=(-I "$(cd "$TEST_NGINX_LIB" && pwd)" -I t/lib)
    echo "test: Test::Nginx from $TEST_NGINX_LIB" >&2
fi

cd "$top"
prove "${inc[@]}" "$@"
