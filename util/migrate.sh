#!/usr/bin/env bash
# Applies the numbered migrations in sql/ that the database does not have
# yet ("make migrate"), each in its own transaction, recorded in
# schema_migrations.  The module never changes the schema itself.
#
#   util/migrate.sh [--reset]
#
# Connection: the usual libpq variables (PGHOST, PGPORT, PGDATABASE,
# PGUSER, PGPASSWORD); defaults 127.0.0.1:5432, helixagent, postgres.
# --reset drops the tables first (tests only).
# The migrations are sql/ beside this script (the Debian package's
# /usr/share/libnginx-mod-http-helix/) or in the tree above it (util/).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
sql=$here/sql
[[ -d $sql ]] || sql=$here/../sql

export PGHOST=${PGHOST:-127.0.0.1}
export PGPORT=${PGPORT:-5432}
export PGDATABASE=${PGDATABASE:-helixagent}
export PGUSER=${PGUSER:-postgres}

export PGOPTIONS="-c client_min_messages=warning"

psql_() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

if [[ ${1:-} == --reset ]]; then
    psql_ -c "DROP TABLE IF EXISTS completions, background_tasks,
              schema_migrations CASCADE" >/dev/null
fi

psql_ -c "CREATE TABLE IF NOT EXISTS schema_migrations (
            version text PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now())"

for f in "$sql"/[0-9]*.sql; do
    v=$(basename "$f" .sql)
    done_=$(psql_ -tAc "SELECT 1 FROM schema_migrations WHERE version = '$v'")
    [[ $done_ == 1 ]] && continue
    psql_ --single-transaction -f "$f" \
        -c "INSERT INTO schema_migrations (version) VALUES ('$v')" >/dev/null
    echo "migrate: applied $v"
done
