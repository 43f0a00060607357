#!/usr/bin/env bash
# The multi-node test bed ("make test-cluster"; root): network namespaces
# on one bridge, private addresses, nothing leaves the machine.
#
#   util/cluster.sh up      create the namespaces, start Redis, PostgreSQL
#                           (migrated) and the mock provider in theirs
#   util/cluster.sh down    stop them, delete the namespaces
#   util/cluster.sh test    up, prove t/cluster/ inside the load
#                           balancer's namespace, down (whatever happens)
#
#   namespace    address        what
#   hx-sw        -              the bridge (hxbr0)
#   hx-redis     10.213.0.2     redis-server :6379
#   hx-pg        10.213.0.3     PostgreSQL :5432 (database helixagent)
#   hx-mock      10.213.0.4     util/mock_provider :18101-18103
#   hx-lb        10.213.0.10    the tests, and the nginx load balancer
#   hx-n1..n3    10.213.0.11-13 gateway nodes (started by the tests)
#
# State: build/cluster/.  HELIX_CLUSTER_PREFIX changes "hx-" (two beds on
# one machine).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
state=$top/build/cluster
P=${HELIX_CLUSTER_PREFIX:-hx-}
NET=10.213.0

declare -A ADDR=([redis]=2 [pg]=3 [mock]=4 [lb]=10 [n1]=11 [n2]=12 [n3]=13)

die() { echo "cluster: $*" >&2; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

up() {
    [[ $(id -u) -eq 0 ]] || die "needs root (ip netns)"
    ip netns add "${P}probe" 2>/dev/null \
        || die "network namespaces are not allowed here (ip netns add failed)"
    ip netns del "${P}probe"

    down >/dev/null 2>&1 || true
    mkdir -p "$state"

    ip netns add "${P}sw"
    in_ns sw ip link add hxbr0 type bridge
    in_ns sw ip link set hxbr0 up

    local n
    for n in "${!ADDR[@]}"; do
        ip netns add "$P$n"
        ip link add "v$P$n" type veth peer name "b$P$n"
        ip link set "v$P$n" netns "$P$n"
        ip link set "b$P$n" netns "${P}sw"
        in_ns sw ip link set "b$P$n" master hxbr0 up
        in_ns "$n" ip link set lo up
        in_ns "$n" ip addr add "$NET.${ADDR[$n]}/24" dev "v$P$n"
        in_ns "$n" ip link set "v$P$n" up
    done

    # Redis
    mkdir -p "$state/redis"
    in_ns redis redis-server --bind "$NET.2" --port 6379 --protected-mode no \
        --save '' --appendonly no --daemonize yes --dir "$state/redis" \
        --pidfile "$state/redis/redis.pid" --logfile "$state/redis/redis.log"

    # PostgreSQL, as its own user, in a directory it can reach
    local pgd
    pgd=$(mktemp -d /tmp/helix-cluster-pg.XXXXXX)
    chmod 755 "$pgd"
    chown postgres: "$pgd"
    echo "$pgd" > "$state/pg.dir"
    (cd / && runuser -u postgres -- "$PGBIN/initdb" -D "$pgd/data" -U postgres \
        --auth=trust -N -E UTF8 --no-locale >"$pgd/initdb.log" 2>&1)
    echo "host all all $NET.0/24 trust" >> "$pgd/data/pg_hba.conf"
    (cd / && in_ns pg runuser -u postgres -- "$PGBIN/pg_ctl" -D "$pgd/data" \
        -l "$pgd/postgres.log" -w -o "-c listen_addresses=$NET.3 -p 5432 \
        -k $pgd -c fsync=off -c synchronous_commit=off" start >/dev/null)
    in_ns lb psql -X -q -h "$NET.3" -U postgres -d postgres \
        -c "create database helixagent" >/dev/null
    in_ns lb env PGHOST="$NET.3" PGPORT=5432 "$top/util/migrate.sh" >/dev/null

    # the mock provider
    in_ns mock "$top/util/mock_provider" --host "$NET.4" --openai 18101 \
        --anthropic 18102 --gemini 18103 --pidfile "$state/mock.pid" \
        > "$state/mock.log" 2>&1 &
    local i
    for i in $(seq 1 300); do
        in_ns lb curl -sf -o /dev/null "http://$NET.4:18101/_mock/health" && break
        sleep 0.1
    done
    in_ns lb curl -sf -o /dev/null "http://$NET.4:18101/_mock/health" \
        || die "the mock provider did not start"

    echo "cluster: up (redis $NET.2, postgresql $NET.3, mock $NET.4)"
}

down() {
    local n pid pgd
    if [[ -s "$state/mock.pid" ]]; then
        pid=$(cat "$state/mock.pid")
        kill "$pid" 2>/dev/null || true
    fi
    if [[ -s "$state/redis/redis.pid" ]]; then
        kill "$(cat "$state/redis/redis.pid")" 2>/dev/null || true
    fi
    if [[ -s "$state/pg.dir" ]]; then
        pgd=$(cat "$state/pg.dir")
        if [[ -f "$pgd/data/postmaster.pid" ]]; then
            (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$pgd/data" \
                -m immediate stop >/dev/null 2>&1) || true
        fi
        case "$pgd" in /tmp/helix-cluster-pg.*) rm -rf "$pgd" ;; esac
        rm -f "$state/pg.dir"
    fi
    for n in "${!ADDR[@]}" sw; do
        # whatever still runs in it (nginx nodes of a failed test) goes
        for pid in $(ip netns pids "$P$n" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null || true
        done
        ip netns del "$P$n" 2>/dev/null || true
    done
    echo "cluster: down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    test)
        trap down EXIT
        up
        cd "$top"
        in_ns lb env HELIX_CLUSTER_PREFIX="$P" prove -I t/lib t/cluster/
        ;;
    *) sed -n 2,20p "$0" >&2; exit 2 ;;
esac
