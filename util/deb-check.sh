#!/usr/bin/env bash
# "make test-deb": the Debian package in the system's nginx, as a server
# gets it.  Builds it (util/deb.sh), installs it with apt-get, checks that
# dh_nginx's postinst enabled it in /etc/nginx/modules-enabled and that
# "nginx -t" passes with it, runs a private nginx (the system binary, its
# load_module lines from modules-enabled, its own files in build/deb-check/)
# on 127.0.0.1:$HELIX_DEB_PORT (default 2150) that must answer /health and
# /v1/models, stops it, purges the package and checks that /etc/nginx and
# the package's directories are as they were.  Needs root (or sudo); it
# refuses to run when the package is already installed.
#
#   util/deb-check.sh
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

pkg=libnginx-mod-http-helix
port=${HELIX_DEB_PORT:-2150}
dir=$top/build/deb-check
nginx=/usr/sbin/nginx

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
ok()   { echo "test-deb: ok: $*"; }

status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
if [[ $status == *installed* || $status == *config-files* ]]; then
    fail "$pkg is already on this system ($status); purge it first"
fi

# what the package touches, to compare after the purge
snapshot() {
    { find /etc/nginx /usr/share/nginx/modules-available /usr/lib/nginx \
           /usr/share/$pkg /usr/share/doc/$pkg 2>/dev/null || true; } | sort
}
before=$(snapshot)

util/deb.sh
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=build/${pkg}_${version}_${arch}.deb

installed=
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        "${SUDO[@]}" kill -QUIT "$pid" || true
    fi
    if [[ -n $installed ]]; then
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get purge -y -q "$pkg" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "./$deb" \
    > build/deb-install.log 2>&1 \
    || { tail -20 build/deb-install.log >&2; fail "apt-get install ./$deb"; }
installed=1
ok "apt-get install ./$deb"

[[ $(dpkg-query -W -f='${Status}' "$pkg") == "install ok installed" ]] \
    || fail "$pkg is not installed"

# dh_nginx: the load file in modules-available, linked by the postinst
link=/etc/nginx/modules-enabled/50-mod-http-helix.conf
avail=/usr/share/nginx/modules-available/mod-http-helix.conf
[[ -L $link && $(readlink "$link") == "$avail" ]] \
    || fail "$link is not a link to $avail"
grep -qx 'load_module modules/ngx_http_helix_module.so;' "$avail" \
    || fail "$avail: $(cat "$avail")"
ok "$link -> $avail: $(cat "$avail")"

# the system's own configuration, which includes modules-enabled
"${SUDO[@]}" "$nginx" -t -q || fail "nginx -t with the module enabled"
"${SUDO[@]}" "$nginx" -T 2>/dev/null \
    | grep -x "# configuration file $link:" >/dev/null \
    || fail "/etc/nginx/nginx.conf does not include $link"
ok "nginx -t (/etc/nginx/nginx.conf, the module from modules-enabled)"

# a private nginx with the package's module: helix.yaml without Redis or
# PostgreSQL, so it needs nothing else running
rm -rf "$dir"
mkdir -p "$dir/tmp"
cat > "$dir/helix.yaml" <<EOF
cache:
  l2:
    enabled: false
providers:
  openai:
    models: [gpt-4o]
  claude:
    models: [claude-3-haiku-20240307]
EOF
cat > "$dir/nginx.conf" <<EOF
include $(dirname "$link")/*.conf;

worker_processes  1;
error_log         $dir/error.log notice;
pid               $dir/nginx.pid;

events {
    worker_connections  64;
}

http {
    access_log             $dir/access.log;
    client_body_temp_path  $dir/tmp/body;
    proxy_temp_path        $dir/tmp/proxy;
    fastcgi_temp_path      $dir/tmp/fastcgi;
    uwsgi_temp_path        $dir/tmp/uwsgi;
    scgi_temp_path         $dir/tmp/scgi;

    helix_config  $dir/helix.yaml;

    server {
        listen  127.0.0.1:$port;

        location = /health     { helix_endpoint health; }
        location = /v1/models  { helix_endpoint models; }
    }
}
EOF

"${SUDO[@]}" "$nginx" -t -q -c "$dir/nginx.conf" \
    || fail "nginx -t -c $dir/nginx.conf"
"${SUDO[@]}" "$nginx" -c "$dir/nginx.conf" \
    || fail "nginx -c $dir/nginx.conf did not start (see $dir/error.log)"

for _ in $(seq 100); do
    [[ -s $dir/nginx.pid ]] && break
    sleep 0.1
done
pid=$(cat "$dir/nginx.pid" 2>/dev/null) || fail "no $dir/nginx.pid"

# the port answers once the workers run
code=
for _ in $(seq 100); do
    code=$(curl -s -o "$dir/health.json" -w '%{http_code}' \
               "http://127.0.0.1:$port/health") && break
    sleep 0.1
done
[[ $code == 200 ]] || fail "GET /health: $code $(cat "$dir/health.json" 2>/dev/null)"
grep -q "\"status\":\"ok\",\"version\":\"${version%-*}\"" "$dir/health.json" \
    || fail "GET /health: $(cat "$dir/health.json")"
ok "GET /health: 200 $(cat "$dir/health.json")"

code=$(curl -s -o "$dir/models.json" -w '%{http_code}' \
           "http://127.0.0.1:$port/v1/models")
[[ $code == 200 ]] && grep -q '"gpt-4o"' "$dir/models.json" \
    || fail "GET /v1/models: $code $(cat "$dir/models.json")"
ok "GET /v1/models: 200"

if grep -E '\[(alert|emerg|crit)\]' "$dir/error.log"; then
    fail "$dir/error.log"
fi

"${SUDO[@]}" kill -QUIT "$pid"
for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "nginx $pid did not stop"
pid=
ok "nginx stopped"

"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get purge -y -q "$pkg" > build/deb-purge.log 2>&1 \
    || { tail -20 build/deb-purge.log >&2; fail "apt-get purge $pkg"; }
installed=
[[ -z $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) ||
   $(dpkg-query -W -f='${Status}' "$pkg") == "unknown ok not-installed" ]] \
    || fail "$pkg still known to dpkg after the purge"
after=$(snapshot)
if [[ $before != "$after" ]]; then
    diff <(echo "$before") <(echo "$after") >&2 || true
    fail "the purge left the system different"
fi
ok "apt-get purge $pkg: /etc/nginx and the package's directories as before"

echo "test-deb: PASS"
